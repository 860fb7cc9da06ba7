//! `cmdr serve` settings: defaults, then an optional TOML file (`--config`),
//! then environment variables and flags; validated once at start-up.
//!
//! ```toml
//! data_dir = "./cmdr-data"      # CMDR_DATA_DIR, --data-dir
//! listen = "127.0.0.1:3000"     # CMDR_LISTEN, --listen
//! body_limit = 1048576          # bytes, at most 8 MiB; CMDR_BODY_LIMIT, --body-limit
//! sync_wait_ms = 5000           # ?sync=true wait; CMDR_SYNC_WAIT_MS
//! max_wait_ms = 60000           # longest Prefer: wait, at most 15 min; CMDR_MAX_WAIT_MS
//! idempotency_ttl_s = 86400     # Idempotency-Key lifetime, 0 = forever; CMDR_IDEMPOTENCY_TTL_S
//! commands_partitions = 1       # at topic creation only (a warning otherwise)
//! events_partitions = 1
//! webhook_timeout_ms = 10000    # one webhook request; CMDR_WEBHOOK_TIMEOUT_MS
//! webhook_max_attempts = 5      # attempts before a dead letter; CMDR_WEBHOOK_MAX_ATTEMPTS
//! webhook_backoff_ms = 100      # first retry wait, doubled each time; CMDR_WEBHOOK_BACKOFF_MS
//! webhook_max_backoff_ms = 10000  # longest retry wait; CMDR_WEBHOOK_MAX_BACKOFF_MS
//! example = "accounts"          # run the example domain too; CMDR_EXAMPLE, --example
//! tls_cert = "cert.pem"         # serve HTTPS (both or neither; paths relative to
//! tls_key = "key.pem"           #   the working directory); CMDR_TLS_CERT, CMDR_TLS_KEY
//! webhook_ca_cert = "ca.pem"    # trust this CA for https:// webhooks too; CMDR_WEBHOOK_CA_CERT
//! header_read_timeout_s = 30    # request headers and keep-alive idle; CMDR_HEADER_READ_TIMEOUT_S
//!                               #   (above a load balancer's idle timeout)
//! send_timeout_s = 45           # a client taking no bytes this long is cut off; CMDR_SEND_TIMEOUT_S
//! min_free_bytes = 268435456   # under it writes get 507 (reads go on), 0: no reserve;
//!                               #   CMDR_MIN_FREE_BYTES, --min-free-bytes
//! access_log = false           # a line per request (target cmdr::access); CMDR_ACCESS_LOG, --access-log
//! no_webhooks = false           # start no webhook processor (a restored copy); CMDR_NO_WEBHOOKS, --no-webhooks
//! max_connections = 10000       # served at once, then 503 (health checks answered); CMDR_MAX_CONNECTIONS
//! shutdown_delay_ms = 0         # at SIGTERM, /readyz 503 but serving on this long; CMDR_SHUTDOWN_DELAY_MS
//! drain_timeout_ms = 20000      # then longest wait for open requests to finish; CMDR_DRAIN_TIMEOUT_MS
//! index_wait_ms = 5000          # a read of an id not indexed yet waits this long for the index; CMDR_INDEX_WAIT_MS
//! max_index_lag = 20000         # answers wait while the index is further behind; CMDR_MAX_INDEX_LAG
//! cors_origins = ["https://app.example.com"]  # browsers elsewhere ("*": any); CMDR_CORS_ORIGINS
//! log_format = "text"           # or "json", one object per line; CMDR_LOG_FORMAT, --log-format
//!                               #   (also for reindex)
//!
//! # Bearer tokens (`cmdr token new` makes one). Without any, the server is
//! # open and every principal is "anonymous". SIGHUP rereads them.
//! [[tokens]]
//! principal = "billing-service"  # recorded as meta.principal of its commands
//! roles = ["read", "write"]       # read: GETs; write: POST /commands; admin: all
//! sha256 = "<64 hex digits>"      # SHA-256 of the token; the token itself is not stored
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use cmdr_processor::{RetryPolicy, WebhookConfig};
use serde::Deserialize;

/// Default lifetime of an `Idempotency-Key`: a day.
pub const DEFAULT_IDEMPOTENCY_TTL_S: u64 = 86_400;
/// Longest configurable lifetime of an `Idempotency-Key` (ten years; 0 means forever).
pub const MAX_IDEMPOTENCY_TTL_S: u64 = 10 * 365 * 86_400;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./cmdr-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// Most partitions a topic may be created with.
pub const MAX_PARTITIONS: u32 = 1024;
/// Largest `header_read_timeout_s` and `send_timeout_s`: a day.
pub const MAX_HEADER_READ_TIMEOUT_S: u64 = 86_400;
/// Largest `index_wait_ms`: a minute (a read waiting longer helps nobody).
const MAX_INDEX_WAIT_MS: u64 = 60_000;
/// Largest `max_index_lag`: a billion commands (in effect, no backpressure).
const MAX_MAX_INDEX_LAG: u64 = 1_000_000_000;
/// Largest `shutdown_delay_ms` and `drain_timeout_ms`: an hour.
pub const MAX_SHUTDOWN_MS: u64 = 3_600_000;
/// Largest `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Largest `max_wait_ms`: 15 minutes (`cmdr send --sync` waits that long,
/// and a little more, for an answer).
pub const MAX_MAX_WAIT_MS: u64 = 900_000;
/// Largest `body_limit`: the log's largest record (a command's record is
/// its body and a little more, so a body near this still gets a 413).
pub const MAX_BODY_LIMIT: usize = cmdr_log::embedded::DEFAULT_MAX_RECORD_BYTES;

/// Longest webhook request timeout accepted, in ms (one hour).
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 3_600_000;
/// Most webhook attempts accepted.
pub const MAX_WEBHOOK_ATTEMPTS: u32 = 100;

/// An example domain `cmdr serve` can run in the same process.
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Example {
    /// Bank accounts: open-account, deposit, withdraw, transfer; balances at /accounts.
    Accounts,
}

/// How `cmdr serve` writes its log lines (to standard error).
#[derive(ValueEnum, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where the data lives (shared by `serve` and `reindex`).
#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// Data directory (log and index). Default ./cmdr-data.
    #[arg(long, env = "CMDR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "CMDR_CONFIG")]
    pub config: Option<PathBuf>,
    /// How long an Idempotency-Key stays bound to its first command, in
    /// seconds after that command; 0 keeps keys forever. Default 86400 (a
    /// day). Also read by `reindex`, which must rebuild keys the same way.
    #[arg(long, env = "CMDR_IDEMPOTENCY_TTL_S")]
    pub idempotency_ttl_s: Option<u64>,
    /// Log lines as text or as JSON objects, one per line (levels and
    /// targets: RUST_LOG, default info). Default text.
    #[arg(long, env = "CMDR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Flags of `cmdr serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address to listen on (ADDR:PORT, ADDR an IP address or a host name such as localhost; port 0 picks a free one). Default 127.0.0.1:3000.
    #[arg(long, env = "CMDR_LISTEN")]
    pub listen: Option<String>,
    /// Largest request body in bytes. Default 1 MiB.
    #[arg(long, env = "CMDR_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// How long ?sync=true waits for an outcome, in ms. Default 5000.
    #[arg(long, env = "CMDR_SYNC_WAIT_MS")]
    pub sync_wait_ms: Option<u64>,
    /// Longest wait a client may ask for, in ms. Default 60000.
    #[arg(long, env = "CMDR_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u64>,
    /// Time a webhook processor has to answer one request, in ms. Default 10000.
    #[arg(long, env = "CMDR_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
    /// Attempts per command before a webhook failure becomes a dead letter. Default 5.
    #[arg(long, env = "CMDR_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// Wait before the first webhook retry, in ms (doubled each time). Default 100.
    #[arg(long, env = "CMDR_WEBHOOK_BACKOFF_MS")]
    pub webhook_backoff_ms: Option<u64>,
    /// Longest wait between webhook retries, in ms. Default 10000.
    #[arg(long, env = "CMDR_WEBHOOK_MAX_BACKOFF_MS")]
    pub webhook_max_backoff_ms: Option<u64>,
    /// Also run an example domain in this process (its processors and read-model routes).
    #[arg(long, env = "CMDR_EXAMPLE")]
    pub example: Option<Example>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "CMDR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CMDR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for https:// webhook processors, beside the system's.
    #[arg(long, env = "CMDR_WEBHOOK_CA_CERT")]
    pub webhook_ca_cert: Option<PathBuf>,
    /// Longest a client may take to send a request's headers, and longest a
    /// keep-alive connection may idle, in seconds. Default 30.
    #[arg(long, env = "CMDR_HEADER_READ_TIMEOUT_S")]
    pub header_read_timeout_s: Option<u64>,
    /// Longest a client may take none of the bytes sent to it (a live
    /// stream's reader that stopped reading) before its connection is
    /// closed, in seconds. Default 45.
    #[arg(long, env = "CMDR_SEND_TIMEOUT_S")]
    pub send_timeout_s: Option<u64>,
    /// Bytes kept free in the data directory's file system: below it,
    /// clients' writes get 507 (and /readyz says so), while reads, indexing and
    /// processors go on; 0 keeps no reserve. Default 268435456 (256 MiB).
    #[arg(long, env = "CMDR_MIN_FREE_BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Log a line per answered request (target cmdr::access: method,
    /// path, query with access_token hidden, status, ms, principal). Off by
    /// default.
    #[arg(long, env = "CMDR_ACCESS_LOG")]
    pub access_log: bool,
    /// Start no webhook processor: their registrations stay readable and
    /// editable, and commands of their actions stay pending. For a copy of
    /// a server (a restored backup, a staging run) that must not call the
    /// original's endpoints.
    #[arg(long, env = "CMDR_NO_WEBHOOKS")]
    pub no_webhooks: bool,
    /// Most connections served at once; up to 64 more get one answer each
    /// (health checks as usual, else 503), and further clients wait in the
    /// listen backlog until one closes. Default 10000.
    #[arg(long, env = "CMDR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// At SIGTERM/SIGINT, how long to keep serving with /readyz already
    /// answering 503 (for a load balancer to stop sending), in ms. Default 0.
    #[arg(long, env = "CMDR_SHUTDOWN_DELAY_MS")]
    pub shutdown_delay_ms: Option<u64>,
    /// Longest a shutdown then waits for open requests to finish, in ms. Default 20000.
    #[arg(long, env = "CMDR_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// How long a read of an id not indexed yet (or an idempotent POST)
    /// waits for the index to catch up with the log, in ms. Default 5000.
    #[arg(long, env = "CMDR_INDEX_WAIT_MS")]
    pub index_wait_ms: Option<u64>,
    /// Backpressure: how many commands a partition's index may be behind
    /// its log before answers to POST /commands wait for it. Default 20000.
    #[arg(long, env = "CMDR_MAX_INDEX_LAG")]
    pub max_index_lag: Option<u64>,
    /// Origins allowed to call the API from a browser (CORS), comma
    /// separated, each an origin such as http://localhost:5173; "*" for any. Default none.
    #[arg(long = "cors-origin", env = "CMDR_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
}

/// The configuration file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    body_limit: Option<usize>,
    sync_wait_ms: Option<u64>,
    max_wait_ms: Option<u64>,
    idempotency_ttl_s: Option<u64>,
    commands_partitions: Option<u32>,
    events_partitions: Option<u32>,
    webhook_timeout_ms: Option<u64>,
    webhook_max_attempts: Option<u32>,
    webhook_backoff_ms: Option<u64>,
    webhook_max_backoff_ms: Option<u64>,
    example: Option<Example>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    webhook_ca_cert: Option<PathBuf>,
    header_read_timeout_s: Option<u64>,
    send_timeout_s: Option<u64>,
    min_free_bytes: Option<u64>,
    access_log: Option<bool>,
    no_webhooks: Option<bool>,
    max_connections: Option<usize>,
    shutdown_delay_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
    index_wait_ms: Option<u64>,
    max_index_lag: Option<u64>,
    cors_origins: Option<Vec<String>>,
    log_format: Option<LogFormat>,
    tokens: Option<Vec<TokenEntry>>,
}

/// One `[[tokens]]` entry of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    roles: Vec<cmdr_gateway::Role>,
    sha256: String,
}

/// The tokens of the file, or `None` when it lists none.
fn tokens(entries: Option<Vec<TokenEntry>>) -> Result<Option<cmdr_gateway::Tokens>> {
    let Some(entries) = entries else {
        return Ok(None);
    };
    if entries.is_empty() {
        bail!("tokens is empty: list at least one [[tokens]] entry, or remove it to run without authentication");
    }
    let mut tokens = cmdr_gateway::Tokens::default();
    for (i, entry) in entries.into_iter().enumerate() {
        let grant = cmdr_gateway::Grant {
            principal: entry.principal,
            roles: entry.roles,
        };
        tokens
            .add_hash(&entry.sha256, grant)
            .with_context(|| format!("tokens entry {}", i + 1))?;
    }
    Ok(Some(tokens))
}

/// The tokens of the configuration file of `args` as it is now (for a
/// reload), or `None` when it lists none. The settings are validated whole
/// first, as at start-up (with `args`' flags, without loading certificates),
/// so a reload never takes any part of a file the next start would refuse.
pub fn reread_tokens(args: &ServeArgs) -> Result<Option<cmdr_gateway::Tokens>> {
    Settings::resolve_with(args, false)?;
    tokens(read_file(args.storage.config.as_deref())?.tokens)
}

/// `ADDR:PORT`, where ADDR is an IP address or a host name (`localhost`),
/// which is resolved now and its first address taken.
fn listen_address(text: &str) -> Result<SocketAddr> {
    let Some(host) = listen_host(text)? else {
        return Ok(text.parse()?);
    };
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .with_context(|| format!("listen address {text:?}: cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("listen address {text:?}: {host:?} has no address"))
}

/// Checks the form `ADDR:PORT` without resolving anything: the host name
/// to resolve, or `None` for an IP address.
fn listen_host(text: &str) -> Result<Option<&str>> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(None);
    }
    let not_addr = || format!("listen address {text:?} is not ADDR:PORT (e.g. 127.0.0.1:3000)");
    let (host, port) = text.rsplit_once(':').with_context(not_addr)?;
    port.parse::<u16>().with_context(not_addr)?;
    if host.is_empty() {
        bail!(not_addr());
    }
    Ok(Some(host))
}

/// The PEM files HTTPS is served with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files (see [`cmdr_gateway::tls::server_config`]).
    pub fn load(&self) -> Result<Arc<cmdr_gateway::tls::ServerConfig>> {
        cmdr_gateway::tls::server_config(&self.cert, &self.key).map_err(anyhow::Error::msg)
    }
}

/// Validated settings of `cmdr serve` / `cmdr reindex`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file, if any (reread on SIGHUP for its tokens).
    pub config_file: Option<PathBuf>,
    /// The certificate and key files of HTTPS, if served (reread on SIGHUP).
    pub tls_files: Option<TlsFiles>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address (for storage-only settings, [`Settings::for_storage`],
    /// `127.0.0.1:0` when it is given as a host name: not resolved).
    pub listen: SocketAddr,
    /// Gateway settings.
    pub gateway: cmdr_gateway::GatewayConfig,
    /// How long an `Idempotency-Key` stays bound; `None`: forever.
    pub idempotency_ttl: Option<Duration>,
    /// Partitions of the commands topic when it is created; `None`: not
    /// set (1 for a new topic, and no warning for an existing one).
    pub commands_partitions: Option<u32>,
    /// Partitions of the events topic when it is created, as
    /// [`Settings::commands_partitions`].
    pub events_partitions: Option<u32>,
    /// Settings of the webhook processor runners.
    pub webhooks: WebhookConfig,
    /// The example domain to run, if any.
    pub example: Option<Example>,
    /// Whether webhook processors run (`--no-webhooks` says not).
    pub start_webhooks: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
}

fn read_file(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

impl Settings {
    /// Storage-only settings (for `reindex`), of a data directory that must
    /// exist already.
    pub fn for_storage(args: &StorageArgs) -> Result<Self> {
        let serve = ServeArgs {
            storage: args.clone(),
            listen: None,
            body_limit: None,
            sync_wait_ms: None,
            max_wait_ms: None,
            webhook_timeout_ms: None,
            webhook_max_attempts: None,
            webhook_backoff_ms: None,
            webhook_max_backoff_ms: None,
            example: None,
            tls_cert: None,
            tls_key: None,
            webhook_ca_cert: None,
            header_read_timeout_s: None,
            send_timeout_s: None,
            min_free_bytes: None,
            access_log: false,
            no_webhooks: false,
            max_connections: None,
            shutdown_delay_ms: None,
            drain_timeout_ms: None,
            index_wait_ms: None,
            max_index_lag: None,
            cors_origins: Vec::new(),
        };
        Self::resolve_with(&serve, false)
    }

    /// Merges defaults, file, environment and flags, and validates: the
    /// settings of `cmdr serve` (its data directory may not exist yet: see
    /// [`Settings::make_data_dir`]).
    pub fn resolve(args: &ServeArgs) -> Result<Self> {
        Self::resolve_with(args, true)
    }

    /// Creates the data directory if it is missing: done by `cmdr serve`
    /// once it listens, so that a start refused for its address leaves
    /// nothing behind.
    pub fn make_data_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))
    }

    /// `create` is false for storage-only settings: the data directory must
    /// exist, and what only serving needs (HTTPS key and certificate, the
    /// webhooks' CA certificates) is not loaded, so `reindex` with the
    /// service's config file works without access to its private key.
    fn resolve_with(args: &ServeArgs, create: bool) -> Result<Self> {
        let file = read_file(args.storage.config.as_deref())?;
        let webhooks = webhook_config(args, &file, create)?;
        let example = args.example.or(file.example);
        let data_dir = args
            .storage
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            // It would mean the working directory, which may be `/`.
            bail!("data_dir is empty: give a directory (default {DEFAULT_DATA_DIR})");
        }
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        // Resolved only to serve: `reindex` and a token reload must not
        // fail for a name this machine cannot resolve at the moment.
        let listen = if create {
            listen_address(&listen_text)?
        } else {
            listen_host(&listen_text)?;
            listen_text
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let tls_files = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => bail!("tls_cert and tls_key go together: give both to serve HTTPS, or neither"),
        };
        let tls = match &tls_files {
            Some(files) if create => {
                Some(Arc::new(cmdr_gateway::tls::ServerTls::new(files.load()?)))
            }
            _ => None,
        };
        let mut gateway = cmdr_gateway::GatewayConfig {
            tokens: tokens(file.tokens)?.map(|t| Arc::new(cmdr_gateway::TokenTable::new(t))),
            tls,
            ..cmdr_gateway::GatewayConfig::default()
        };
        if let Some(s) = args.header_read_timeout_s.or(file.header_read_timeout_s) {
            if !(1..=MAX_HEADER_READ_TIMEOUT_S).contains(&s) {
                bail!(
                    "header_read_timeout_s must be from 1 to {MAX_HEADER_READ_TIMEOUT_S}, not {s}"
                );
            }
            gateway.header_read_timeout = Duration::from_secs(s);
        }
        if let Some(s) = args.send_timeout_s.or(file.send_timeout_s) {
            if !(1..=MAX_HEADER_READ_TIMEOUT_S).contains(&s) {
                bail!("send_timeout_s must be from 1 to {MAX_HEADER_READ_TIMEOUT_S}, not {s}");
            }
            gateway.send_timeout = Duration::from_secs(s);
        }
        if let Some(n) = args.min_free_bytes.or(file.min_free_bytes) {
            gateway.min_free_bytes = n;
        }
        gateway.access_log = args.access_log || file.access_log.unwrap_or(false);
        if let Some(ms) = args.index_wait_ms.or(file.index_wait_ms) {
            if !(1..=MAX_INDEX_WAIT_MS).contains(&ms) {
                bail!("index_wait_ms must be from 1 to {MAX_INDEX_WAIT_MS}, not {ms}");
            }
            gateway.index_wait = Duration::from_millis(ms);
        }
        if let Some(n) = args.max_index_lag.or(file.max_index_lag) {
            if !(1..=MAX_MAX_INDEX_LAG).contains(&n) {
                bail!("max_index_lag must be from 1 to {MAX_MAX_INDEX_LAG}, not {n}");
            }
            gateway.max_index_lag = n;
        }
        if let Some(n) = args.max_connections.or(file.max_connections) {
            if !(1..=MAX_MAX_CONNECTIONS).contains(&n) {
                bail!("max_connections must be from 1 to {MAX_MAX_CONNECTIONS}, not {n}");
            }
            gateway.max_connections = n;
        }
        for (name, ms, setting) in [
            (
                "shutdown_delay_ms",
                args.shutdown_delay_ms.or(file.shutdown_delay_ms),
                &mut gateway.shutdown_delay,
            ),
            (
                "drain_timeout_ms",
                args.drain_timeout_ms.or(file.drain_timeout_ms),
                &mut gateway.drain_timeout,
            ),
        ] {
            if let Some(ms) = ms {
                if ms > MAX_SHUTDOWN_MS {
                    bail!("{name} must be at most {MAX_SHUTDOWN_MS} (an hour), not {ms}");
                }
                *setting = Duration::from_millis(ms);
            }
        }
        let origins = if args.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            args.cors_origins.clone()
        };
        if !origins.is_empty() {
            gateway.cors =
                Some(cmdr_gateway::cors::CorsOrigins::parse(&origins).map_err(anyhow::Error::msg)?);
        }
        if let Some(b) = args.body_limit.or(file.body_limit) {
            if b == 0 {
                bail!("body_limit must be at least 1 byte");
            }
            if b > MAX_BODY_LIMIT {
                bail!(
                    "body_limit must be at most {MAX_BODY_LIMIT} (the log's largest record), not {b}"
                );
            }
            gateway.body_limit = b;
        }
        if let Some(ms) = args.max_wait_ms.or(file.max_wait_ms) {
            if ms > MAX_MAX_WAIT_MS {
                bail!("max_wait_ms must be at most {MAX_MAX_WAIT_MS} (15 minutes), not {ms}");
            }
            gateway.max_wait = Duration::from_millis(ms);
        }
        match args.sync_wait_ms.or(file.sync_wait_ms) {
            Some(ms) => gateway.default_wait = Duration::from_millis(ms),
            // Only a maximum was set: the default wait fits under it.
            None => gateway.default_wait = gateway.default_wait.min(gateway.max_wait),
        }
        if gateway.default_wait > gateway.max_wait {
            bail!(
                "sync_wait_ms ({} ms) must not exceed max_wait_ms ({} ms)",
                gateway.default_wait.as_millis(),
                gateway.max_wait.as_millis()
            );
        }
        let ttl_s = args
            .storage
            .idempotency_ttl_s
            .or(file.idempotency_ttl_s)
            .unwrap_or(DEFAULT_IDEMPOTENCY_TTL_S);
        if ttl_s > MAX_IDEMPOTENCY_TTL_S {
            bail!("idempotency_ttl_s must be at most {MAX_IDEMPOTENCY_TTL_S} (0 keeps keys forever), not {ttl_s}");
        }
        let idempotency_ttl = (ttl_s > 0).then(|| Duration::from_secs(ttl_s));
        let (commands_partitions, events_partitions) =
            (file.commands_partitions, file.events_partitions);
        for (name, n) in [
            ("commands_partitions", commands_partitions),
            ("events_partitions", events_partitions),
        ] {
            let Some(n) = n else { continue };
            if !(1..=MAX_PARTITIONS).contains(&n) {
                bail!("{name} must be from 1 to {MAX_PARTITIONS}, not {n}");
            }
        }
        if data_dir.exists() && !data_dir.is_dir() {
            bail!(
                "data directory {} exists and is not a directory",
                data_dir.display()
            );
        }
        // Serving makes a missing one, once it listens (`make_data_dir`).
        if !create && !data_dir.is_dir() {
            bail!(
                "no log to reindex: data directory {} does not exist (is --data-dir right?)",
                data_dir.display()
            );
        }
        Ok(Self {
            config_file: args.storage.config.clone(),
            tls_files,
            data_dir,
            listen,
            gateway,
            idempotency_ttl,
            commands_partitions,
            events_partitions,
            webhooks,
            example,
            start_webhooks: !(args.no_webhooks || file.no_webhooks.unwrap_or(false)),
            log_format: args
                .storage
                .log_format
                .or(file.log_format)
                .unwrap_or_default(),
        })
    }
}

/// The webhook runners' settings: flags and environment over the file over
/// defaults; their TLS configuration only when `serving`.
fn webhook_config(args: &ServeArgs, file: &FileConfig, serving: bool) -> Result<WebhookConfig> {
    let mut config = WebhookConfig::default();
    if serving {
        let extra = match args
            .webhook_ca_cert
            .as_ref()
            .or(file.webhook_ca_cert.as_ref())
        {
            Some(path) => {
                cmdr_processor::tls::read_certificates(path).map_err(anyhow::Error::msg)?
            }
            None => Vec::new(),
        };
        // Built once: every runner shares it (and the system's CA
        // certificates are read once).
        config.tls = Some(cmdr_processor::tls::client_config(&extra).map_err(anyhow::Error::msg)?);
    }
    if let Some(ms) = args.webhook_timeout_ms.or(file.webhook_timeout_ms) {
        if !(1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&ms) {
            bail!("webhook_timeout_ms must be from 1 to {MAX_WEBHOOK_TIMEOUT_MS}, not {ms}");
        }
        config.timeout = Duration::from_millis(ms);
    }
    let defaults = RetryPolicy::default();
    let attempts = args
        .webhook_max_attempts
        .or(file.webhook_max_attempts)
        .unwrap_or(defaults.max_attempts);
    if !(1..=MAX_WEBHOOK_ATTEMPTS).contains(&attempts) {
        bail!("webhook_max_attempts must be from 1 to {MAX_WEBHOOK_ATTEMPTS}, not {attempts}");
    }
    let backoff = args
        .webhook_backoff_ms
        .or(file.webhook_backoff_ms)
        .map_or(defaults.initial_backoff, Duration::from_millis);
    let max_backoff = args
        .webhook_max_backoff_ms
        .or(file.webhook_max_backoff_ms)
        .map_or(defaults.max_backoff, Duration::from_millis);
    if backoff > max_backoff {
        bail!(
            "webhook_backoff_ms ({} ms) must not exceed webhook_max_backoff_ms ({} ms)",
            backoff.as_millis(),
            max_backoff.as_millis()
        );
    }
    config.retry = RetryPolicy::new(attempts, backoff).max_backoff(max_backoff);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            storage: StorageArgs {
                data_dir: Some(dir.join("data")),
                config,
                idempotency_ttl_s: None,
                log_format: None,
            },
            listen: None,
            body_limit: None,
            sync_wait_ms: None,
            max_wait_ms: None,
            webhook_timeout_ms: None,
            webhook_max_attempts: None,
            webhook_backoff_ms: None,
            webhook_max_backoff_ms: None,
            example: None,
            tls_cert: None,
            tls_key: None,
            webhook_ca_cert: None,
            header_read_timeout_s: None,
            send_timeout_s: None,
            min_free_bytes: None,
            access_log: false,
            no_webhooks: false,
            max_connections: None,
            shutdown_delay_ms: None,
            drain_timeout_ms: None,
            index_wait_ms: None,
            max_index_lag: None,
            cors_origins: Vec::new(),
        }
    }

    #[test]
    fn webhook_settings_and_example_follow_defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = Settings::resolve(&args(dir.path(), None)).unwrap();
        assert_eq!(defaults.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(defaults.webhooks.retry, RetryPolicy::default());
        assert_eq!(defaults.example, None);

        let file = dir.path().join("cmdr.toml");
        std::fs::write(
            &file,
            "webhook_timeout_ms = 2500\nwebhook_max_attempts = 7\nwebhook_backoff_ms = 20\nexample = \"accounts\"\n",
        )
        .unwrap();
        let mut a = args(dir.path(), Some(file));
        let from_file = Settings::resolve(&a).unwrap();
        assert_eq!(from_file.webhooks.timeout, Duration::from_millis(2500));
        assert_eq!(from_file.webhooks.retry.max_attempts, 7);
        assert_eq!(
            from_file.webhooks.retry.initial_backoff,
            Duration::from_millis(20)
        );
        assert_eq!(from_file.example, Some(Example::Accounts));

        a.webhook_max_attempts = Some(2);
        a.webhook_timeout_ms = Some(100);
        let flags = Settings::resolve(&a).unwrap();
        assert_eq!(flags.webhooks.retry.max_attempts, 2);
        assert_eq!(flags.webhooks.timeout, Duration::from_millis(100));
    }

    #[test]
    fn a_lower_max_wait_alone_lowers_the_default_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), None);
        a.max_wait_ms = Some(2000);
        let s = Settings::resolve(&a).unwrap();
        assert_eq!(s.gateway.max_wait, Duration::from_millis(2000));
        assert_eq!(s.gateway.default_wait, Duration::from_millis(2000));
        a.sync_wait_ms = Some(3000);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("must not exceed max_wait_ms"), "{err}");
    }

    #[test]
    fn idempotency_ttl_defaults_to_a_day_and_follows_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = Settings::resolve(&args(dir.path(), None)).unwrap();
        assert_eq!(defaults.idempotency_ttl, Some(Duration::from_secs(86_400)));
        // `reindex` needs the directory that serving makes.
        defaults.make_data_dir().unwrap();

        let file = dir.path().join("cmdr.toml");
        std::fs::write(&file, "idempotency_ttl_s = 0\n").unwrap();
        let mut a = args(dir.path(), Some(file.clone()));
        assert_eq!(Settings::resolve(&a).unwrap().idempotency_ttl, None);
        // `reindex` reads it the same way (its flags are the storage flags).
        assert_eq!(
            Settings::for_storage(&a.storage).unwrap().idempotency_ttl,
            None
        );

        a.storage.idempotency_ttl_s = Some(60);
        assert_eq!(
            Settings::resolve(&a).unwrap().idempotency_ttl,
            Some(Duration::from_secs(60))
        );
        a.storage.idempotency_ttl_s = Some(MAX_IDEMPOTENCY_TTL_S + 1);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("idempotency_ttl_s must be at most"), "{err}");
    }

    #[test]
    fn max_connections_is_checked_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), None);
        assert_eq!(
            Settings::resolve(&a).unwrap().gateway.max_connections,
            cmdr_gateway::server::DEFAULT_MAX_CONNECTIONS
        );
        a.max_connections = Some(64);
        assert_eq!(Settings::resolve(&a).unwrap().gateway.max_connections, 64);
        a.max_connections = Some(0);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("max_connections must be from 1"), "{err}");
    }

    #[test]
    fn min_free_bytes_comes_from_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        let mut a = args(dir.path(), None);
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(
            g.min_free_bytes,
            cmdr_gateway::disk_space::DEFAULT_MIN_FREE_BYTES
        );
        std::fs::write(&file, "min_free_bytes = 1073741824\n").unwrap();
        a.storage.config = Some(file);
        assert_eq!(
            Settings::resolve(&a).unwrap().gateway.min_free_bytes,
            1 << 30
        );
        a.min_free_bytes = Some(0);
        assert_eq!(Settings::resolve(&a).unwrap().gateway.min_free_bytes, 0);
    }

    #[test]
    fn send_timeout_comes_from_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        let mut a = args(dir.path(), None);
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.send_timeout, cmdr_gateway::send_timeout::SEND_TIMEOUT);
        std::fs::write(&file, "send_timeout_s = 120\n").unwrap();
        a.storage.config = Some(file);
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.send_timeout, Duration::from_secs(120));
        a.send_timeout_s = Some(5);
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.send_timeout, Duration::from_secs(5));
        a.send_timeout_s = Some(0);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("send_timeout_s must be from 1"), "{err}");
    }

    #[test]
    fn shutdown_delay_and_drain_timeout_come_from_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        std::fs::write(&file, "shutdown_delay_ms = 5000\ndrain_timeout_ms = 9000\n").unwrap();
        let mut a = args(dir.path(), Some(file));
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.shutdown_delay, Duration::from_secs(5));
        assert_eq!(g.drain_timeout, Duration::from_secs(9));
        a.shutdown_delay_ms = Some(250);
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.shutdown_delay, Duration::from_millis(250));
        a.drain_timeout_ms = Some(MAX_SHUTDOWN_MS + 1);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("drain_timeout_ms must be at most"), "{err}");
    }

    #[test]
    fn index_wait_and_max_index_lag_come_from_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        std::fs::write(&file, "index_wait_ms = 1500\nmax_index_lag = 500\n").unwrap();
        let mut a = args(dir.path(), Some(file));
        let g = Settings::resolve(&a).unwrap().gateway;
        assert_eq!(g.index_wait, Duration::from_millis(1500));
        assert_eq!(g.max_index_lag, 500);
        a.max_index_lag = Some(7);
        assert_eq!(Settings::resolve(&a).unwrap().gateway.max_index_lag, 7);
        a.max_index_lag = Some(0);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("max_index_lag must be from 1"), "{err}");
        a.max_index_lag = None;
        a.index_wait_ms = Some(MAX_INDEX_WAIT_MS + 1);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("index_wait_ms must be from 1"), "{err}");
    }

    /// Settings past what the rest of the system can honour are refused at
    /// start rather than silently capped somewhere else.
    #[test]
    fn body_limit_and_max_wait_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), None);
        a.body_limit = Some(MAX_BODY_LIMIT);
        assert_eq!(
            Settings::resolve(&a).unwrap().gateway.body_limit,
            MAX_BODY_LIMIT
        );
        a.body_limit = Some(MAX_BODY_LIMIT + 1);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("body_limit must be at most"), "{err}");
        a.body_limit = None;
        a.max_wait_ms = Some(MAX_MAX_WAIT_MS + 1);
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("max_wait_ms must be at most"), "{err}");
        // `send --sync` outwaits the longest wait a server may have.
        assert!(crate::client::SYNC_REQUEST_TIMEOUT > Duration::from_millis(MAX_MAX_WAIT_MS));
    }

    #[test]
    fn listen_takes_an_address_or_a_host_name() {
        assert_eq!(
            listen_address("127.0.0.1:3000").unwrap(),
            "127.0.0.1:3000".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_address("localhost:3005").unwrap().ip().is_loopback());
        for bad in ["localhost", "localhost:http", "127.0.0.1:70000", ":", ":80"] {
            let err = listen_address(bad).unwrap_err().to_string();
            assert!(err.contains("is not ADDR:PORT"), "{bad}: {err}");
        }
    }

    /// `reindex` (storage-only settings) checks the listen address's form
    /// but resolves no name: a maintenance host may not resolve the
    /// service's.
    #[test]
    fn storage_settings_do_not_resolve_the_listen_host() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let file = dir.path().join("cmdr.toml");
        let storage = |listen: &str| {
            std::fs::write(
                &file,
                format!("data_dir = {data:?}\nlisten = \"{listen}\"\n"),
            )
            .unwrap();
            Settings::for_storage(&StorageArgs {
                data_dir: None,
                config: Some(file.clone()),
                idempotency_ttl_s: None,
                log_format: None,
            })
        };
        storage("nohost.invalid:3000").unwrap();
        let err = storage("nohost.invalid").unwrap_err().to_string();
        assert!(err.contains("is not ADDR:PORT"), "{err}");
    }

    #[test]
    fn an_empty_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        std::fs::write(&file, "data_dir = \"\"\n").unwrap();
        let mut a = args(dir.path(), Some(file));
        a.storage.data_dir = None;
        let err = Settings::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("data_dir is empty"), "{err}");
        let err = Settings::for_storage(&a.storage).unwrap_err().to_string();
        assert!(err.contains("data_dir is empty"), "{err}");
    }

    #[test]
    fn storage_settings_leave_the_certificates_and_keys_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cmdr.toml");
        // Files the service may read and an operator may not, or not yet.
        std::fs::write(
            &file,
            "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\nwebhook_ca_cert = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap();
        let a = args(dir.path(), Some(file));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let err = format!("{:#}", Settings::resolve(&a).unwrap_err());
        assert!(err.contains("/nonexistent/"), "{err}");
        let storage = Settings::for_storage(&a.storage).unwrap();
        assert!(storage.gateway.tls.is_none());
        assert!(storage.webhooks.tls.is_none());
    }

    #[test]
    fn invalid_webhook_settings_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        type Tweak = fn(&mut ServeArgs);
        let cases: [(&str, Tweak); 4] = [
            ("webhook_max_attempts", |a| a.webhook_max_attempts = Some(0)),
            ("webhook_timeout_ms", |a| a.webhook_timeout_ms = Some(0)),
            ("webhook_backoff_ms", |a| {
                a.webhook_backoff_ms = Some(500);
                a.webhook_max_backoff_ms = Some(100);
            }),
            ("webhook_max_attempts", |a| {
                a.webhook_max_attempts = Some(1000)
            }),
        ];
        for (name, set) in cases {
            let mut a = args(dir.path(), None);
            set(&mut a);
            let err = Settings::resolve(&a).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
