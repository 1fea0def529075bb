//! Command-line surface. Each command's own arguments live beside its code in
//! `commands/`; this file holds the top level and the options every command shares.

use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Keep folders in sync, encrypted client-side, through S3 buckets or local stores.
///
/// STORE is a directory path, file:///abs/path, or s3://bucket[/prefix].
#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options accepted by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Read the repository passphrase from the first line of FILE (else
    /// COFFER_PASSPHRASE, else a prompt on the terminal).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "COFFER_PASSPHRASE_FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// No progress bars or summaries; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository in STORE.
    Init(commands::init::Args),
    /// Upload DIR's current state as one commit of DIR's device.
    Push(commands::push::Args),
    /// Write the repository's latest merged state into DIR.
    Pull(commands::pull::Args),
    /// List the repository's files (or those under PATH).
    Ls(commands::ls::Args),
    /// Write one file or directory of the repository to OUT (`-` = stdout).
    Get(commands::get::Args),
    /// Verify the repository; with --read-data, every byte of every pack.
    Check(commands::check::Args),
}
