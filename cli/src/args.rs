//! Command-line surface. Each command's own arguments live beside its code in
//! `commands/`; this file holds the top level and the options shared by commands.

use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Keep folders in sync, encrypted client-side, through S3 buckets or local stores.
///
/// STORE is a directory path, file:///abs/path, or s3://bucket[/prefix]; a bare
/// word that is not an existing path and is a valid bucket name means s3://BUCKET.
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
    /// Read the repository passphrase from the first line of FILE. Without it:
    /// --passphrase-command, else COFFER_PASSPHRASE, else a prompt on the terminal.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "COFFER_PASSPHRASE_FILE"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// Read the repository passphrase from the first line that `sh -c CMD` prints
    /// (a vault CLI: `pass show coffer`); a command that fails or prints nothing is
    /// an error. Not with --passphrase-file.
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        env = "COFFER_PASSPHRASE_COMMAND"
    )]
    pub passphrase_command: Option<String>,
    /// Neither read nor save the master key in this machine's keyring: every
    /// command unlocks through KMS (or a passphrase) again. For VMs that should
    /// ask KMS every time. COFFER_NO_KEYRING=1 (or true, yes, on) does the same.
    #[arg(
        long,
        global = true,
        env = "COFFER_NO_KEYRING",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub no_keyring: bool,
    /// Open repositories through a grant to this age identity (a file holding
    /// `AGE-SECRET-KEY-1...`, as `age-keygen` writes it), tried before any
    /// other key slot.
    #[arg(long, global = true, value_name = "FILE", env = "COFFER_IDENTITY_FILE")]
    pub identity: Option<PathBuf>,
    /// KMS endpoint URL for KMS key slots (default: AWS_ENDPOINT_URL_KMS, else
    /// AWS; never the S3 endpoint).
    #[arg(long, global = true, value_name = "URL", help_heading = "KMS")]
    pub kms_endpoint: Option<String>,
    /// No progress bars or summaries; errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS). Path-style addressing
    /// is used for custom endpoints. Several comma-separated URLs name the nodes
    /// of one cluster: requests go to the first that answers, and a node that
    /// resets or times out is skipped for a while (1 s, doubling up to 30 s).
    #[arg(long, global = true, value_name = "URL", help_heading = "S3")]
    pub endpoint: Option<String>,
    /// Allow plain http:// to a non-loopback endpoint.
    #[arg(long, global = true, help_heading = "S3")]
    pub allow_http: bool,
    /// Add SSE-C with the key in FILE (32 raw bytes or 64 hex characters) to every
    /// object request.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "COFFER_SSE_C_KEY_FILE",
        help_heading = "S3"
    )]
    pub sse_c_key_file: Option<PathBuf>,
    /// Add SSE-C with the key that `sh -c CMD` prints (32 raw bytes or 64 hex
    /// characters); a command that fails is an error. Not with --sse-c-key-file.
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        env = "COFFER_SSE_C_KEY_COMMAND",
        help_heading = "S3"
    )]
    pub sse_c_key_command: Option<String>,
    /// Store new objects with SSE-KMS under this key id ("" = the bucket's default).
    #[arg(
        long,
        global = true,
        value_name = "ID",
        env = "COFFER_SSE_KMS_KEY_ID",
        help_heading = "S3"
    )]
    pub sse_kms_key_id: Option<String>,
    /// Give up on a request after retrying it for this many seconds [default: 900;
    /// `watch`: 60, as the daemon retries failed steps itself].
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        env = "COFFER_REQUEST_BUDGET",
        help_heading = "S3"
    )]
    pub request_budget: Option<u64>,
    /// Cut (and retry) a transfer that makes no progress for this many seconds.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = 10,
        env = "COFFER_STALL_TIMEOUT",
        help_heading = "S3"
    )]
    pub stall_timeout: u64,
    /// Uploads in flight at most (the window adapts below this on SlowDown).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 8,
        env = "COFFER_UPLOADS",
        help_heading = "Tuning"
    )]
    pub uploads: usize,
    /// Upload limit in bytes/s for everything in flight: 10M, 1.5M, 500K, 2G
    /// (1024-based), plain bytes, or off; or a daily schedule of HH:MM,RATE
    /// entries like "08:00,10M 19:00,off" (followed by `watch`).
    #[arg(
        long,
        global = true,
        value_name = "RATE",
        env = "COFFER_LIMIT_UPLOAD",
        help_heading = "Tuning"
    )]
    pub limit_upload: Option<String>,
    /// Download limit in bytes/s, as --limit-upload.
    #[arg(
        long,
        global = true,
        value_name = "RATE",
        env = "COFFER_LIMIT_DOWNLOAD",
        help_heading = "Tuning"
    )]
    pub limit_download: Option<String>,
    /// Pack size target in MiB.
    #[arg(
        long,
        global = true,
        value_name = "MIB",
        default_value_t = 12,
        env = "COFFER_PACK_MIB",
        help_heading = "Tuning"
    )]
    pub pack_mib: usize,
}

/// Argon2id cost of a new key slot.
#[derive(Debug, Clone, clap::Args)]
pub struct KdfArgs {
    /// Argon2id memory in MiB (at least 19).
    #[arg(long, default_value_t = 64, env = "COFFER_KDF_MEMORY_MIB")]
    pub kdf_memory_mib: u32,
    /// Argon2id passes (at least 2).
    #[arg(long, default_value_t = 3, env = "COFFER_KDF_ITERATIONS")]
    pub kdf_iterations: u32,
    /// Argon2id lanes.
    #[arg(long, default_value_t = 4, env = "COFFER_KDF_PARALLELISM")]
    pub kdf_parallelism: u32,
}

impl KdfArgs {
    pub fn params(&self) -> anyhow::Result<coffer_engine::KdfParams> {
        let p = coffer_engine::KdfParams {
            m_cost_kib: self.kdf_memory_mib.saturating_mul(1024),
            t_cost: self.kdf_iterations,
            p_cost: self.kdf_parallelism,
        };
        p.validate()?;
        Ok(p)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository in STORE.
    Init(commands::init::Args),
    /// Upload DIR's current state as one commit of DIR's device.
    Push(commands::push::Args),
    /// Write the repository's latest merged state into DIR.
    Pull(commands::pull::Args),
    /// Push DIR's changes, then pull everyone else's, once.
    Sync(commands::sync::Args),
    /// Keep DIR in sync until interrupted: local changes are pushed as they settle,
    /// other devices' commits are pulled every --poll seconds.
    Watch(commands::watch::Args),
    /// List the repository's files (or those under PATH).
    Ls(commands::ls::Args),
    /// Write one file or directory of the repository to OUT (`-` = stdout).
    Get(commands::get::Args),
    /// Show the commits of every device, oldest first.
    Log(commands::log::Args),
    /// Write a path (or `.`, everything) as it was at a given time.
    Restore(commands::restore::Args),
    /// Stop (or, with --undo, resume) reading the logs of devices on this machine.
    Distrust(commands::distrust::Args),
    /// Verify the repository; with --read-data, every byte of every pack.
    Check(commands::check::Args),
    /// Delete packs no commit names (left by interrupted pushes), in two phases
    /// that concurrent pushes respect: mark now, delete after --grace.
    Prune(commands::prune::Args),
    /// Manage the repository's key slots (passphrase, KMS): list, add, remove, passwd.
    Key(commands::key::Args),
    /// Expiring read access (hcs3 `useraccess -e`): add, list, remove grants.
    Grant(commands::grant::Args),
    /// Partner drops (s3s2): partners write files only the owner reads, with a
    /// key that may only PUT: create, push, list, pull, remove, policy.
    Drop(commands::drop::Args),
    /// hcs3: create a bucket with a repository and its key.
    Create(commands::create::Args),
    /// hcs3: delete a bucket that holds no files, and forget its key.
    Delete(commands::delete::Args),
    /// hcs3: list buckets, or the files of BUCKET.
    List(commands::list::Args),
    /// hcs3: encrypt and upload files, each under its file name.
    Add(commands::add::Args),
    /// hcs3: remove files from BUCKET.
    Rm(commands::rm::Args),
    /// hcs3: credentials, buckets and properties of this machine.
    Status(commands::status::Args),
    /// hcs3: save S3 credentials for this machine (environment variables override them).
    Setstore(commands::setstore::Args),
    /// hcs3: set a property (tmp=PATH).
    Set(commands::set::Args),
    /// Print the version.
    Version,
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell).
    Completions(commands::completions::Args),
    /// Print the manual page coffer(1), or write every page into a directory.
    Man(commands::man::Args),
}
