//! `cmdr`, the command line of the CQRS manager: a thin shell around the
//! library crates. Each subcommand lives in its own module.
//!
//! - `cmdr serve`: run the gateway and index on the embedded log;
//! - `cmdr send`, `cmdr get`, `cmdr tail`: talk to a running server over HTTP;
//! - `cmdr backup`: download an online backup of a running server's log;
//! - `cmdr reindex`: rebuild the index from the log (server stopped);
//! - `cmdr token new`: make a bearer token and its configuration entry;
//! - `cmdr bench log|http|sync`: benchmarks that print figures.

mod bench;
mod client;
mod config;
mod example;
mod fd_limit;
mod reindex;
mod reload;
mod serve;
mod settled;
mod storage;
mod token;

use clap::{CommandFactory, Parser, Subcommand};

/// jemalloc instead of the system allocator: the intake path allocates and
/// frees a few small buffers per command on many threads, where glibc's
/// malloc spent about an eighth of the server's CPU (arena locking and
/// consolidation, per `perf record`). In paired runs of `cmdr bench http` at
/// 64 connections jemalloc gave +7% commands/s at the same resident memory;
/// mimalloc gave +6% but held 40 MiB more.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// cmdr: send commands, read their outcome, follow what happens.
#[derive(Parser)]
#[command(name = "cmdr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP gateway and the index on the embedded log.
    Serve(Box<config::ServeArgs>),
    /// Send a command to a running server.
    Send(client::SendArgs),
    /// Show a command (with its status and events) or an event by id.
    Get(client::GetArgs),
    /// Follow new commands or events (Server-Sent Events), one JSON per line.
    Tail(client::TailArgs),
    /// Download an online backup of a running server's log into a tar file.
    Backup(client::BackupArgs),
    /// Rebuild the index from the log (stop the server first).
    Reindex(config::StorageArgs),
    /// Make bearer tokens for a server that requires them.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = parse_cli();
    if matches!(
        cli.command,
        Command::Send(_) | Command::Get(_) | Command::Tail(_)
    ) {
        client::quiet_on_closed_pipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Send(args) => client::send(args).await,
            Command::Get(args) => client::get(args).await,
            Command::Tail(args) => client::tail(args).await,
            Command::Backup(args) => client::backup(args).await,
            Command::Reindex(args) => reindex::run(args).await,
            Command::Token(cmd) => token::run(cmd),
            Command::Bench(cmd) => bench::run(cmd).await,
        }
    });
    // Dropping a runtime waits for every blocking task without end: one
    // still checking a costly command after a graceful shutdown (whose
    // answer nobody reads any more) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The exit status for clap's `e`: 0 for `--help` and `--version`,
/// [`EXIT_USAGE`] for a refusal.
fn usage_status(e: &clap::Error) -> i32 {
    if e.use_stderr() {
        EXIT_USAGE
    } else {
        0
    }
}

/// Exit status of a refused command line: sysexits' `EX_USAGE`, not clap's
/// 2, which `cmdr send --sync` gives a rejected command (a script must tell
/// a typo from a business rule's answer).
const EXIT_USAGE: i32 = 64;

/// The command line, parsed; exits as clap does when it is refused, with
/// [`EXIT_USAGE`] for a refusal. A refused value that came from an
/// environment variable, not from the flag clap names, is said to have come
/// from there.
fn parse_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(mut e) => {
            if let Some(var) = refused_env_var(&e) {
                use clap::error::{ContextKind, ContextValue};
                e.insert(
                    ContextKind::Suggested,
                    ContextValue::StyledStrs(vec![format!(
                        "the value came from the environment variable {var}"
                    )
                    .into()]),
                );
            }
            if wants_json_logs() && e.use_stderr() {
                // A log collector reads JSON lines: this refusal is one too.
                let text = e.render().to_string();
                serve::json_refusal("the command line is refused", text.trim_end());
                std::process::exit(usage_status(&e));
            }
            // As `e.exit()`, with this program's status.
            let _ = e.print();
            std::process::exit(usage_status(&e))
        }
    }
}

/// Whether the command line or the environment asks for JSON log lines
/// (`--log-format json`, `CMDR_LOG_FORMAT=json`) of a command that logs
/// (`serve`, `reindex`), read without clap, which has just refused the
/// command line.
fn wants_json_logs() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if !matches!(args.get(1).map(String::as_str), Some("serve" | "reindex")) {
        return false;
    }
    let flag = args.iter().enumerate().find_map(|(i, a)| {
        if a == "--log-format" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--log-format=").map(str::to_string)
        }
    });
    flag.or_else(|| std::env::var("CMDR_LOG_FORMAT").ok())
        .is_some_and(|f| f.eq_ignore_ascii_case("json"))
}

/// The environment variable that gave the value `e` refuses, when it is
/// set and its flag is not on the command line.
fn refused_env_var(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // "--min-free-bytes <MIN_FREE_BYTES>" names the flag `min-free-bytes`.
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let flag = format!("--{long}");
    let on_command_line = std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if on_command_line {
        return None;
    }
    let var = env_var_of(&Cli::command(), long)?;
    std::env::var_os(&var).map(|_| var)
}

/// The environment variable of flag `--long` in `cmd` or its subcommands.
fn env_var_of(cmd: &clap::Command, long: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| cmd.get_subcommands().find_map(|sub| env_var_of(sub, long)))
}
