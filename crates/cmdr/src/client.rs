//! `cmdr send`, `cmdr get`, `cmdr tail`, `cmdr backup`: HTTP clients of a running server
//! (`--url`, env `CMDR_URL`, default http://127.0.0.1:3000; `--token`, env
//! `CMDR_TOKEN`, when the server requires a bearer token; `--ca-cert`, env
//! `CMDR_CA_CERT`, to trust an `https://` server's private CA).
//!
//! Exit status: 0 on success, 1 when the server answered with an error (its
//! problem document is printed) or could not be reached, 2 when a sync
//! command was rejected, 3 when a sync command was still pending when the
//! wait ran out (`202`, `"status": "pending"`: look it up later with
//! `cmdr get`).
//!
//! Every request gives up after [`REQUEST_TIMEOUT`] ([`SYNC_REQUEST_TIMEOUT`]
//! for `send --sync`; connecting, after [`CONNECT_TIMEOUT`]); `tail`
//! reconnects when its stream stays silent for [`TAIL_SILENCE`] (the server
//! sends a heartbeat every 15 s).
//!
//! Their output is for pipes too: when the reader goes away (`cmdr tail
//! ... | head -1`), they stop quietly, as Unix tools do (see
//! [`quiet_on_closed_pipe`]).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

/// Default server URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:3000";
/// Longest wait for a connection to the server.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest wait for a whole answer of `send` or `get`.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
/// Longest wait for the answer of `send --sync`: longer than any sync wait
/// a server may be configured with ([`crate::config::MAX_MAX_WAIT_MS`]), so
/// a command still pending is told apart (exit 3) from a lost answer.
pub const SYNC_REQUEST_TIMEOUT: std::time::Duration =
    std::time::Duration::from_millis(crate::config::MAX_MAX_WAIT_MS + 30_000);
/// Longest `tail` waits without a byte from the server before it counts the
/// stream as dropped (three heartbeats).
pub const TAIL_SILENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// Which server to talk to, and as whom.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Server URL.
    #[arg(long, env = "CMDR_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token, for a server configured with tokens.
    #[arg(long, env = "CMDR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to trust for an https:// server, beside the
    /// system's (a private CA or a self-signed certificate).
    #[arg(long, env = "CMDR_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Flags of `cmdr send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The action, e.g. open-account.
    pub action: String,
    /// The data, a JSON object.
    #[arg(long, default_value = "{}")]
    pub data: String,
    /// Ordering key (aggregate id).
    #[arg(long)]
    pub key: Option<String>,
    /// Wait for the outcome (as long as the server's `sync_wait_ms`).
    #[arg(long)]
    pub sync: bool,
    /// Wait for the outcome this long (`Prefer: wait=N`; the server caps it
    /// at its `max_wait_ms`); implies --sync.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// Idempotency-Key header (retries return the first answer).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Flags of `cmdr get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// A command or event id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Flags of `cmdr tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// What to follow.
    #[arg(value_parser = ["commands", "events"])]
    pub topic: String,
    /// Where to start: end (default), start, or a position printed earlier.
    #[arg(long, default_value = "end")]
    pub from: String,
    /// Only this action.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Stop after this many records (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn client(server: &ServerArgs) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &server.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("--token holds characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let extra = match &server.ca_cert {
        Some(path) => cmdr_processor::tls::read_certificates(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let tls = cmdr_processor::tls::client_config(&extra).map_err(anyhow::Error::msg)?;
    cmdr_processor::tls::client_builder(Some(&tls))
        .map_err(anyhow::Error::msg)?
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("building the HTTP client")
}

/// `base` (the server URL) with `segments` appended to its path, each
/// percent-encoded as needed.
fn url_of(base: &str, segments: &[&str]) -> Result<reqwest::Url> {
    let scheme = base.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        anyhow::bail!("--url {base:?} must start with http:// or https:// (e.g. http://{base})");
    }
    let mut url =
        reqwest::Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {base:?} cannot take a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Prints an answer (its JSON pretty) and says how it went as an exit
/// status (see the module); `sync`: the request waited for an outcome.
async fn print_response(res: reqwest::Response, sync: bool) -> Result<ExitCode> {
    let status = res.status();
    let applied = res
        .headers()
        .get("preference-applied")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("wait="))
        .map(str::to_string);
    let text = res.text().await.context("reading the response")?;
    let pretty = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        // A sync wait that ran out: the command is in, its outcome not yet.
        let pending = status == reqwest::StatusCode::ACCEPTED && sync;
        Ok(if pending {
            match applied {
                Some(secs) => eprintln!(
                    "no outcome yet (asked to wait up to {secs} s): the command is pending"
                ),
                None => eprintln!("no outcome yet: the command is pending"),
            }
            ExitCode::from(3)
        } else {
            ExitCode::SUCCESS
        })
    } else {
        eprintln!("{status}\n{pretty}");
        Ok(ExitCode::from(if status == reqwest::StatusCode::CONFLICT {
            2
        } else {
            1
        }))
    }
}

/// `cmdr send`.
pub async fn send(args: SendArgs) -> Result<ExitCode> {
    let data: Value = serde_json::from_str(&args.data)
        .with_context(|| format!("--data is not JSON: {}", args.data))?;
    let mut body = serde_json::json!({"action": args.action, "data": data});
    if let Some(k) = args.key {
        body["key"] = Value::String(k);
    }
    let mut url = url_of(&args.server.url, &["commands"])?;
    let sync = args.sync || args.wait.is_some();
    if args.sync && args.wait.is_none() {
        url.set_query(Some("sync=true"));
    }
    let mut req = client(&args.server)?
        .post(url.clone())
        .timeout(if sync {
            SYNC_REQUEST_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        })
        .json(&body);
    if let Some(k) = args.idempotency_key {
        req = req.header("idempotency-key", k);
    }
    if let Some(secs) = args.wait {
        req = req.header("prefer", format!("wait={secs}"));
    }
    let res = req
        .send()
        .await
        .map_err(|e| unreachable_server(e, &format!("POST {url}")))?;
    print_response(res, sync).await
}

/// A request that got no answer, as an error that says what to try: the
/// causes users meet (a certificate not trusted, HTTP to an HTTPS server or
/// the reverse, nothing listening) each get a hint.
fn unreachable_server(e: reqwest::Error, what: &str) -> anyhow::Error {
    let mut chain = String::new();
    let mut innermost = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        innermost = c.to_string();
        chain.push_str(&format!("{innermost}: "));
        cause = c.source();
    }
    let https = e.url().is_some_and(|u| u.scheme() == "https");
    let refused = chain.contains("certificate") || chain.contains("UnknownIssuer");
    if refused {
        // The layers above the TLS error only repeat it.
        chain = format!("the server's certificate was refused ({innermost})");
    }
    let hint = if chain.contains("CaUsedAsEndEntity") {
        Some("the server's certificate is marked as a CA (basicConstraints CA:TRUE, what `openssl req -x509` makes unless told otherwise) and is used as the server's own, which this client refuses even when trusted: make it with `-addext basicConstraints=critical,CA:FALSE` (see the README's HTTPS section), or sign the server's certificate with a separate CA and pass that CA with --ca-cert")
    } else if refused {
        Some("the server's certificate is not trusted: pass --ca-cert with the CA (or the self-signed certificate) that signed it")
    } else if !https && chain.contains("invalid HTTP version") {
        Some("the server may speak HTTPS: try an https:// --url")
    } else if https && (chain.contains("InvalidContentType") || chain.contains("corrupt message")) {
        Some("the server may speak plain HTTP: try an http:// --url")
    } else if e.is_connect() {
        Some("nothing answered: is `cmdr serve` running at that --url?")
    } else {
        None
    };
    let message = format!("{what}: {}", chain.trim_end_matches(": "));
    match hint {
        Some(h) => anyhow::anyhow!("{message}\nhint: {h}"),
        None => anyhow::anyhow!(message),
    }
}

/// `cmdr get`: a command, or else an event.
pub async fn get(args: GetArgs) -> Result<ExitCode> {
    let client = client(&args.server)?;
    // Ids are UUIDs: anything else names no command or event, and some
    // names another resource (`.`, `..` and `updates` would list the
    // commands or open their live stream).
    if uuid::Uuid::parse_str(&args.id).is_err() {
        eprintln!(
            "404 Not Found\nno command or event has id {:?} (ids are UUIDs)",
            args.id
        );
        return Ok(ExitCode::from(1));
    }
    let fetch = |kind: &'static str| {
        let client = client.clone();
        let url = url_of(&args.server.url, &[kind, &args.id]);
        async move {
            let url = url?;
            client
                .get(url.clone())
                .timeout(REQUEST_TIMEOUT)
                .send()
                .await
                .map_err(|e| unreachable_server(e, &format!("GET {url}")))
        }
    };
    let res = fetch("commands").await?;
    if res.status() != reqwest::StatusCode::NOT_FOUND {
        return print_response(res, false).await;
    }
    let res = fetch("events").await?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        eprintln!("404 Not Found\nno command or event has id {:?}", args.id);
        return Ok(ExitCode::from(1));
    }
    print_response(res, false).await
}

/// Flags of `cmdr backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The tar archive to write (refused if it exists); written as
    /// `FILE.part`, then given its name once complete and checked.
    #[arg(long, short)]
    pub out: std::path::PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Longest `cmdr backup` waits for the next bytes of the archive.
pub const BACKUP_SILENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// `cmdr backup`: downloads `GET /backup` into `--out`, checks that the
/// archive is whole (every entry complete, the manifest's file count and
/// bytes), makes it durable, and prints the manifest. A partial download
/// never takes the name `--out`, and no existing file is overwritten.
pub async fn backup(args: BackupArgs) -> Result<ExitCode> {
    use std::io::Write as _;
    let out = args.out;
    if out.exists() {
        anyhow::bail!("{} exists: give another --out", out.display());
    }
    let part = std::path::PathBuf::from(format!("{}.part", out.display()));
    let url = url_of(&args.server.url, &["backup"])?;
    let request = client(&args.server)?.get(url.clone()).send();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within {REQUEST_TIMEOUT:?}"))?;
    let res = answer.map_err(|e| unreachable_server(e, &format!("GET {url}")))?;
    if !res.status().is_success() {
        return print_response(res, false).await;
    }
    // Never over another download's file.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    " (a backup to this --out under way, or a stale file to remove)"
                }
                std::io::ErrorKind::NotFound => " (its directory does not exist)",
                _ => "",
            };
            anyhow::anyhow!("creating {}{why}: {e}", part.display())
        })?;
    let mut body = res.bytes_stream();
    let downloaded: Result<u64> = async {
        let mut bytes = 0u64;
        loop {
            let next = tokio::time::timeout(BACKUP_SILENCE, body.next())
                .await
                .map_err(|_| anyhow::anyhow!("the server sent nothing for {BACKUP_SILENCE:?}"))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.context("the archive was cut short")?;
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", part.display()))?;
            bytes += chunk.len() as u64;
        }
        file.sync_all()
            .with_context(|| format!("syncing {}", part.display()))?;
        Ok(bytes)
    }
    .await;
    let checked = downloaded.and_then(|bytes| Ok((bytes, check_archive(&part)?)));
    let (bytes, manifest) = match checked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.context(format!("GET {url}: no backup written")));
        }
    };
    name_without_overwriting(&part, &out)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&manifest).unwrap_or_default()
    );
    eprintln!(
        "wrote {} ({bytes} bytes); restore: tar -xf {} -C NEW_DATA_DIR && cmdr serve --data-dir NEW_DATA_DIR",
        out.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Gives the file `part` the name `out` unless a file has it (made since
/// the check at the start): a hard link, which fails rather than replace
/// one, or where the file system has none (FAT, some network mounts), a
/// rename after another check. On failure `part` is kept, and the error
/// says where it is.
fn name_without_overwriting(part: &std::path::Path, out: &std::path::Path) -> Result<()> {
    let kept = || format!("the backup is kept in {}", part.display());
    match std::fs::hard_link(part, out) {
        Ok(()) => {
            let _ = std::fs::remove_file(part);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!("{} exists now: {}", out.display(), kept())
        }
        Err(_) if out.exists() => anyhow::bail!("{} exists now: {}", out.display(), kept()),
        Err(_) => std::fs::rename(part, out)
            .with_context(|| format!("renaming it to {}: {}", out.display(), kept())),
    }
}

/// Reads the archive at `path` through: every entry whole, the first the
/// manifest, and the rest as many and as large as it says. Returns the
/// manifest.
fn check_archive(path: &std::path::Path) -> Result<Value> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut manifest: Option<Value> = None;
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let name = entry
            .path()
            .context("reading the archive")?
            .display()
            .to_string();
        if manifest.is_none() {
            anyhow::ensure!(
                name == cmdr_gateway::backup::MANIFEST,
                "the archive does not start with {}",
                cmdr_gateway::backup::MANIFEST
            );
            let mut raw = Vec::new();
            entry
                .read_to_end(&mut raw)
                .context("reading the manifest")?;
            manifest = Some(serde_json::from_slice(&raw).context("the manifest is not JSON")?);
            continue;
        }
        // Reads the entry through: a cut archive fails here.
        bytes += std::io::copy(&mut entry, &mut std::io::sink())
            .with_context(|| format!("reading {name} from the archive"))?;
        files += 1;
    }
    let manifest = manifest.context("the archive is empty")?;
    let (want_files, want_bytes) = (manifest["files"].as_u64(), manifest["bytes"].as_u64());
    anyhow::ensure!(
        want_files == Some(files) && want_bytes == Some(bytes),
        "the archive holds {files} files and {bytes} bytes, its manifest says {want_files:?} and {want_bytes:?}"
    );
    Ok(manifest)
}

/// Reconnections `cmdr tail` attempts in a row when the stream drops.
pub const TAIL_RETRIES: u32 = 10;
/// Pause before a reconnection (a retry backoff, doubled each time).
const TAIL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);

/// `cmdr tail`: prints each record's JSON on a line (positions on stderr).
/// When the stream drops (or stays silent past [`TAIL_SILENCE`]) it
/// reconnects from the last position the server gave (`Last-Event-ID`; the
/// server also gives one when the stream starts and after records its
/// filters skipped), so no record is missed or repeated.
pub async fn tail(args: TailArgs) -> Result<ExitCode> {
    tokio::select! {
        done = follow(args) => done,
        () = stdout_closed() => Ok(ExitCode::SUCCESS),
    }
}

/// Resolves once standard output is a pipe or socket whose reader has gone
/// away (`cmdr tail ... | head -2` after its two lines), so that a `tail`
/// with nothing new to print ends then, not at its next record. Never
/// resolves for a terminal or a file (`epoll` takes no regular file).
async fn stdout_closed() {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        use tokio::io::{unix::AsyncFd, Interest};
        // A duplicate: the watch must not close standard output when it ends.
        let watch = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            // SAFETY: the `OwnedFd` is ours alone: open, and the same file
            // description, for as long as the `AsyncFd` that owns it lives.
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, Interest::ERROR) }.ok());
        if let Some(fd) = watch {
            loop {
                match fd.ready(Interest::ERROR).await {
                    Ok(guard) if guard.ready().is_error() => return,
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => break,
                }
            }
        }
    }
    std::future::pending::<()>().await;
}

/// [`tail`]'s work: follows the stream, reconnecting, until `--limit`.
async fn follow(args: TailArgs) -> Result<ExitCode> {
    let base = args.server.url.trim_end_matches('/');
    let mut query = vec![("from", args.from.clone())];
    if let Some(a) = &args.action {
        query.push(("action", a.clone()));
    }
    if let Some(k) = &args.key {
        query.push(("key", k.clone()));
    }
    let mut url = url_of(base, &[args.topic.as_str(), "updates"])?;
    url.set_query(Some(&serde_urlencoded::to_string(&query)?));
    let client = client(&args.server)?;
    let mut last: Option<String> = None;
    let mut seen = 0u64;
    let mut failures = 0u32;
    loop {
        let mut req = client.get(url.clone());
        if let Some(id) = &last {
            req = req.header("last-event-id", id.as_str());
        }
        let res = match req.send().await {
            Ok(r) => r,
            // A server that was never reached is an error at once (a wrong
            // --url); one that was is waited for.
            Err(e) if last.is_some() && failures < TAIL_RETRIES => {
                // reqwest names the first URL (`from=...`); the resume is
                // from the last position, sent as Last-Event-ID.
                let at = last.as_deref().unwrap_or_default();
                eprintln!(
                    "connection failed ({}); reconnecting from position {at}",
                    e.without_url()
                );
                failures += 1;
                tokio::time::sleep(TAIL_BACKOFF * 2u32.pow(failures.min(5))).await;
                continue;
            }
            Err(e) => return Err(unreachable_server(e, &format!("GET {url}"))),
        };
        if res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && failures < TAIL_RETRIES {
            // Too many live streams, or the server is starting or stopping:
            // it may well take this one a moment later.
            eprintln!("reconnecting: the server answered 503 (busy)");
            failures += 1;
            tokio::time::sleep(TAIL_BACKOFF * 2u32.pow(failures.min(5))).await;
            continue;
        }
        if !res.status().is_success() {
            return print_response(res, false).await;
        }
        let event_stream = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !event_stream {
            anyhow::bail!(
                "GET {url} did not answer with an event stream (is --url a cmdr server?)"
            );
        }
        let mut stream = res.bytes_stream();
        let mut buf = Vec::new();
        // An event is printed, and its position kept for a resume, only at
        // the blank line that ends it: an event cut short by a dropped
        // connection is neither printed nor skipped, but sent again.
        let (mut data, mut id): (Vec<String>, Option<String>) = (Vec::new(), None);
        loop {
            // Silence past a few heartbeats: the connection is dead.
            let Ok(Some(Ok(chunk))) = tokio::time::timeout(TAIL_SILENCE, stream.next()).await
            else {
                break;
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                } else if let Some(i) = line.strip_prefix("id:") {
                    id = Some(i.trim_start().to_string());
                } else if line.is_empty() && data.is_empty() {
                    // An id alone: where the server has read to (past
                    // records the filters skipped), to resume from.
                    if let Some(id) = id.take() {
                        // Progress resets the count of failed connections;
                        // the position every stream starts with does not.
                        if last.as_ref() != Some(&id) {
                            failures = 0;
                        }
                        last = Some(id);
                    }
                } else if line.is_empty() {
                    println!("{}", data.join("\n"));
                    data.clear();
                    if let Some(id) = id.take() {
                        eprintln!("position {id}");
                        last = Some(id);
                    }
                    failures = 0;
                    seen += 1;
                    if args.limit.is_some_and(|l| seen >= l) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
            }
        }
        if failures >= TAIL_RETRIES {
            anyhow::bail!("the event stream dropped {TAIL_RETRIES} times in a row");
        }
        failures += 1;
        match &last {
            Some(at) => eprintln!("stream ended; reconnecting from position {at}"),
            None => eprintln!("stream ended; reconnecting"),
        }
        tokio::time::sleep(TAIL_BACKOFF).await;
    }
}

/// Makes a write to a closed pipe end the process quietly (status 141, as
/// for `cat`), as `send`, `get` and `tail` print to standard output: Rust
/// ignores `SIGPIPE`, so `println!` would panic with a backtrace instead.
/// Only for these clients: the server must never die of a closed socket.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before
    // any other thread exists, has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::name_without_overwriting;

    #[test]
    fn a_finished_backup_never_replaces_a_file_and_is_kept_when_it_cannot_be_named() {
        let dir = tempfile::tempdir().unwrap();
        let (part, out) = (dir.path().join("b.tar.part"), dir.path().join("b.tar"));
        std::fs::write(&part, b"archive").unwrap();
        std::fs::write(&out, b"someone else's").unwrap();
        let err = name_without_overwriting(&part, &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exists now") && err.contains("kept in"),
            "{err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"someone else's");
        assert_eq!(std::fs::read(&part).unwrap(), b"archive");
        std::fs::remove_file(&out).unwrap();
        name_without_overwriting(&part, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"archive");
        assert!(!part.exists());
    }
}
