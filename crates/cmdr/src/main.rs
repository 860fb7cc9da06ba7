//! `cmdr`, the command line of the CQRS manager: a thin shell around the
//! library crates. Each subcommand lives in its own module.
//!
//! - `cmdr serve`: run the gateway and index on the embedded log;
//! - `cmdr send`, `cmdr get`, `cmdr tail`: talk to a running server over HTTP;
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

use clap::{Parser, Subcommand};

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
    let cli = Cli::parse();
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
            Command::Reindex(args) => reindex::run(args).await,
            Command::Token(cmd) => token::run(cmd),
            Command::Bench(cmd) => bench::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
