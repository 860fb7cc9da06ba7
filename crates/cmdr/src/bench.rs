//! `cmdr bench`: benchmarks that print figures.
//!
//! - `cmdr bench log`: the embedded log engine (fsync on), with the machine's
//!   raw fsync rate beside it;
//! - `cmdr bench http`: starts a real `cmdr serve` on a temporary data
//!   directory and loads `POST /commands` and `GET /commands/{id}`, with a
//!   bare `202` handler measured the same way as the ceiling;
//! - `cmdr bench live`: starts a real `cmdr serve` and loads `POST
//!   /commands` while N clients follow `GET /commands/updates`, at each
//!   subscriber count: what live subscribers cost the writers;
//! - `cmdr bench sync`: starts `cmdr serve --example accounts` and loads
//!   `POST /commands?sync=true` (each answered once the processor accepted it).
//!
//! Load and server share this machine's cores, so the figures are for the
//! whole system on one machine.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cmdr_bench::suite::{self, SuiteOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What to benchmark.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The embedded log: append and read throughput and latency, fsync on.
    Log(LogArgs),
    /// The HTTP intake path of a real server: async POST /commands and GET by id.
    Http(HttpArgs),
    /// Synchronous round trips through the example accounts processor.
    Sync(HttpArgs),
    /// Async POST /commands while SSE subscribers follow every command.
    Live(LiveArgs),
    /// Serves the bare ceiling handler (`bench http` runs it as a child
    /// process, like the server under test).
    #[command(hide = true)]
    BareServer(BareArgs),
}

/// Options of the bare ceiling server.
#[derive(clap::Args)]
pub struct BareArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Options of the log benchmark.
#[derive(clap::Args)]
pub struct LogArgs {
    /// Seconds each case runs (at most a day).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Records written then read back for the sequential read figure.
    #[arg(long, default_value_t = 2_000_000)]
    read_records: usize,
    /// Directory to run in (default: a temporary directory). Use the disk you
    /// want measured.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// Options of the HTTP benchmarks.
#[derive(clap::Args)]
pub struct HttpArgs {
    /// Seconds each load step runs (at most a day).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Connection counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    connections: Vec<usize>,
    /// Runs of each intake step; the run with the median rate is reported
    /// (steadier figures on a noisy machine).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Keys of the posted commands (`bench http`; `bench sync` posts to
    /// one account per connection): `per-connection` (`conn-N`), `none`
    /// (each command's key is its own id) or a number of keys taken in turn.
    #[arg(long, default_value = "per-connection")]
    keys: cmdr_bench::suite::Keys,
    /// Intake and reads over HTTP/2 (prior knowledge, h2c), each step's
    /// connections then being streams, this many to an HTTP/2 connection
    /// (the bare ceiling too). Default: HTTP/1.1.
    #[arg(long, value_name = "STREAMS_PER_CONNECTION", value_parser = clap::value_parser!(u64).range(1..=100))]
    http2: Option<u64>,
}

/// Options of the live-updates benchmark.
#[derive(clap::Args)]
pub struct LiveArgs {
    /// Seconds each load step runs (at most a day).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Writer connections, each with one POST /commands in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    writers: u64,
    /// Subscriber counts to run, comma separated (each at most 4,096, the
    /// server's limit of live streams).
    #[arg(long, value_delimiter = ',', default_value = "0,10,100,1000")]
    subscribers: Vec<usize>,
    /// How subscribers follow: `sse` (GET /commands/updates) or `ws` (a
    /// subscription on GET /ws).
    #[arg(long, default_value = "sse")]
    protocol: cmdr_bench::live::Protocol,
}

/// Runs a benchmark and prints its report.
pub async fn run(cmd: BenchCommand) -> Result<std::process::ExitCode> {
    match cmd {
        BenchCommand::Log(args) => {
            let opts = cmdr_bench::log::Options {
                dir: args.dir,
                duration: Duration::from_secs(args.seconds.max(1)),
                partitions: args.partitions.max(1),
                read_records: args.read_records,
                ..Default::default()
            };
            let report = cmdr_bench::log::run(&opts).await.context("log benchmark")?;
            println!("{report}");
        }
        BenchCommand::Http(args) => {
            let server = Server::start(&[]).await?;
            let bare = Server::spawn(&["bench", "bare-server"], None).await?;
            let mut opts = options(&args, &server);
            opts.bare = Some(bare.addr);
            opts.bare_pid = Some(bare.pid());
            let protocol = match args.http2 {
                Some(n) => format!("HTTP/2 (h2c), {n} streams per connection"),
                None => "HTTP/1.1".to_string(),
            };
            println!(
                "# cmdr bench http: {}s per step, median of {} run(s), keys {:?}, {protocol}, server pid {}\n",
                args.seconds,
                args.repeat.max(1),
                args.keys,
                server.pid()
            );
            let report = suite::intake(&opts).await.map_err(anyhow::Error::msg)?;
            println!("{report}");
        }
        BenchCommand::Sync(args) => {
            let server = Server::start(&["--example", "accounts"]).await?;
            let opts = options(&args, &server);
            let max = args.connections.iter().copied().max().unwrap_or(1);
            open_accounts(server.addr, max).await?;
            println!(
                "# cmdr bench sync: {}s per step, example accounts processor\n",
                args.seconds
            );
            let body: cmdr_bench::http::BodyFn = Arc::new(|conn, _| {
                Bytes::from(format!(
                    r#"{{"action":"deposit","data":{{"amount":1}},"key":"bench-{conn}"}}"#
                ))
            });
            let report = suite::sync(&opts, body).await.map_err(anyhow::Error::msg)?;
            println!("{report}");
        }
        BenchCommand::Live(args) => {
            let most = args.subscribers.iter().copied().max().unwrap_or(0);
            if most > cmdr_gateway::MAX_LIVE_STREAMS {
                bail!(
                    "--subscribers: at most {} (the server's limit of live streams), not {most}",
                    cmdr_gateway::MAX_LIVE_STREAMS
                );
            }
            // One socket per subscriber and writer in this process.
            crate::fd_limit::raise(most + args.writers as usize, false);
            let server = Server::start(&[]).await?;
            let opts = cmdr_bench::live::LiveOptions {
                addr: server.addr,
                pid: Some(server.pid()),
                step: Duration::from_secs(args.seconds),
                writers: args.writers as usize,
                subscribers: args.subscribers.clone(),
                keys: cmdr_bench::suite::Keys::PerConnection,
                protocol: args.protocol,
            };
            println!(
                "# cmdr bench live: {}s per step, {} writer connections, {:?} subscribers, server pid {}\n",
                args.seconds,
                args.writers,
                args.protocol,
                server.pid()
            );
            let report = cmdr_bench::live::run(&opts)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
        }
        BenchCommand::BareServer(args) => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            println!("bare server listening on http://{}", listener.local_addr()?);
            cmdr_bench::http::serve_bare(listener)
                .await
                .context("serving")?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn options(args: &HttpArgs, server: &Server) -> SuiteOptions {
    SuiteOptions {
        addr: server.addr,
        pid: Some(server.pid()),
        step: Duration::from_secs(args.seconds.max(1)),
        connections: args.connections.clone(),
        bare: None,
        bare_pid: None,
        repeat: args.repeat.max(1),
        keys: args.keys,
        http2: args.http2.map(|n| n as usize),
    }
}

/// Opens accounts `bench-0` .. `bench-{n-1}` and waits for each to be accepted.
async fn open_accounts(addr: SocketAddr, n: usize) -> Result<()> {
    let client = http_client()?;
    for i in 0..n {
        let resp = client
            .post(format!("http://{addr}/commands?sync=true"))
            .json(&serde_json::json!({"action": "open-account", "data": {"owner": "bench"}, "key": format!("bench-{i}")}))
            .send()
            .await
            .context("opening a bench account")?;
        if !resp.status().is_success() {
            bail!(
                "opening account bench-{i}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A child process of this executable serving HTTP (`cmdr serve` on a
/// temporary data directory, or the bare ceiling server), killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// `cmdr serve` on a fresh temporary data directory, with `extra` flags.
    async fn start(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary data directory")?;
        let data_dir = dir.path().to_string_lossy().into_owned();
        let mut args = vec!["serve", "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        Self::spawn(&args, Some(dir)).await
    }

    /// Runs this executable with `args` plus `--listen 127.0.0.1:0`, reads
    /// the address from its first line and waits until it is ready.
    async fn spawn(args: &[&str], dir: Option<tempfile::TempDir>) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the cmdr executable")?;
        let mut child = std::process::Command::new(exe)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting cmdr {}", args.join(" ")))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let stdout = tokio::process::ChildStdout::from_std(stdout).context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not start within 60 s")??
            .context("the server exited before listening")?;
        let addr: SocketAddr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("unexpected first line from the server: {line}"))?;
        let server = Self {
            child,
            addr,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self) -> Result<()> {
        let client = http_client()?;
        for _ in 0..600 {
            if let Ok(r) = client
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the server at {} never became ready", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the benchmark's set-up requests (plain HTTP).
fn http_client() -> Result<reqwest::Client> {
    cmdr_processor::tls::client_builder(None)
        .map_err(anyhow::Error::msg)?
        .build()
        .context("building the HTTP client")
}
