//! `cmdr token new`: makes a random bearer token and prints it with the
//! `[[tokens]]` entry that grants it (which holds only its SHA-256).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rand::RngCore;

/// `cmdr token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a new random token and print its configuration entry.
    New(NewArgs),
}

/// Flags of `cmdr token new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// Who uses the token; recorded as `meta.principal` of its commands.
    #[arg(long)]
    pub principal: String,
    /// Roles to grant (repeat the flag): read, write, admin. Default read and write.
    #[arg(long = "role", value_parser = ["read", "write", "admin"])]
    pub roles: Vec<String>,
}

/// Runs a `cmdr token` subcommand.
pub fn run(command: TokenCommand) -> Result<ExitCode> {
    let TokenCommand::New(args) = command;
    let roles = if args.roles.is_empty() {
        vec!["read".to_string(), "write".to_string()]
    } else {
        args.roles
    };
    // Checked like the server will check it, so the entry printed loads.
    if let Err(e) = cmdr_gateway::auth::validate_principal(&args.principal) {
        bail!("{e}");
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let token = format!("cmdr_{}", hex::encode(secret));
    let roles = roles
        .iter()
        .map(|r| format!("{r:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let principal = toml::Value::String(args.principal);
    println!("token: {token}");
    println!();
    println!("# Add to the server's configuration file (it keeps only the hash):");
    println!("[[tokens]]");
    println!("principal = {principal}");
    println!("roles = [{roles}]");
    println!("sha256 = \"{}\"", cmdr_gateway::Tokens::hash_hex(&token));
    Ok(ExitCode::SUCCESS)
}
