//! `coffer`: keep folders in sync, encrypted client-side, through S3 buckets.
//!
//! The command-line front end, as a library so the integration tests can build the
//! very same program as their own binary. It is thin: it parses arguments ([`args`]), builds the context every
//! command shares ([`context`]), runs one command (one file each in [`commands`])
//! and maps failures to a one-line message and a non-zero exit code.

mod args;
mod bandwidth;
mod commands;
mod context;
mod kms;
mod memory;
mod ops;
mod output;
mod passphrase;
mod progress;
mod quote;
mod secret;
mod settings;

use clap::Parser;
use std::process::ExitCode;

/// Runs coffer with the process's arguments; the whole of `main`.
pub fn main() -> ExitCode {
    memory::limit_arenas();
    let cli = args::Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coffer: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coffer: error: {}", output::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` selects them (default: warnings, but not the AWS
/// SDK's per-attempt credential-provider warnings: coffer reports the outcome).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,aws_config=error,aws_smithy_runtime=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
