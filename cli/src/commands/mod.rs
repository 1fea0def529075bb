//! One module per command; [`run`] dispatches.

pub mod add;
pub mod check;
pub mod completions;
pub mod create;
pub mod delete;
pub mod distrust;
pub mod drop;
pub mod get;
pub mod grant;
pub mod init;
pub mod key;
pub mod list;
pub mod log;
pub mod ls;
pub mod man;
pub mod prune;
pub mod pull;
pub mod push;
pub mod restore;
pub mod rm;
pub mod set;
pub mod setstore;
pub mod status;
pub mod sync;
pub mod watch;

use crate::args::{Cli, Command};
use crate::context::Ctx;
use coffer_engine::RepoPath;
use std::process::ExitCode;

/// Runs the parsed command line.
pub async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    // These need no coffer home or settings: they run before any context.
    match cli.command {
        Command::Completions(a) => return completions::run(a),
        Command::Man(a) => return man::run(cli.global.quiet, a),
        _ => {}
    }
    if matches!(cli.command, Command::Watch(_)) {
        // A step stuck retrying would hold back journaling and the daemon's own
        // backoff; one-shot commands wait longer for the store instead.
        cli.global
            .request_budget
            .get_or_insert(watch::REQUEST_BUDGET_SECS);
    }
    let (name, json) = event_mode(&cli.command);
    let ops = std::sync::Arc::new(crate::ops::Ops::new(name, json));
    let ctx = Ctx::new(cli.global, ops.clone());
    let ctx = match ctx {
        Ok(ctx) => ctx,
        Err(e) => return Err(fatal(&ops, e)),
    };
    dispatch(&ctx, cli.command)
        .await
        .map_err(|e| fatal(&ops, e))
}

/// A command's name in events and whether it prints them (`--json`).
fn event_mode(c: &Command) -> (&'static str, bool) {
    match c {
        Command::Push(a) => ("push", a.json),
        Command::Pull(a) => ("pull", a.json),
        Command::Sync(a) => ("sync", a.json),
        Command::Watch(a) => ("watch", a.json),
        Command::Restore(a) => ("restore", a.json),
        Command::Get(a) => ("get", a.json),
        Command::Check(a) => ("check", a.json),
        Command::Prune(a) => ("prune", a.json),
        _ => ("coffer", false),
    }
}

/// Tells a command's failure as an `error` event (it also reaches stderr).
fn fatal(ops: &crate::ops::Ops, e: anyhow::Error) -> anyhow::Error {
    ops.emit(crate::ops::events::Event::Error {
        message: crate::output::one_line(&e),
        fatal: true,
    });
    e
}

async fn dispatch(ctx: &Ctx, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(a) => init::run(ctx, a).await,
        Command::Push(a) => push::run(ctx, a).await,
        Command::Pull(a) => pull::run(ctx, a).await,
        Command::Sync(a) => sync::run(ctx, a).await,
        Command::Watch(a) => watch::run(ctx, a).await,
        Command::Log(a) => log::run(ctx, a).await,
        Command::Restore(a) => restore::run(ctx, a).await,
        Command::Ls(a) => ls::run(ctx, a).await,
        Command::Distrust(a) => distrust::run(ctx, a).await,
        Command::Get(a) => get::run(ctx, a).await,
        Command::Check(a) => check::run(ctx, a).await,
        Command::Prune(a) => prune::run(ctx, a).await,
        Command::Key(a) => key::run(ctx, a).await,
        Command::Grant(a) => grant::run(ctx, a).await,
        Command::Drop(a) => drop::run(ctx, a).await,
        Command::Create(a) => create::run(ctx, a).await,
        Command::Delete(a) => delete::run(ctx, a).await,
        Command::List(a) => list::run(ctx, a).await,
        Command::Add(a) => add::run(ctx, a).await,
        Command::Rm(a) => rm::run(ctx, a).await,
        Command::Status(a) => status::run(ctx, a).await,
        Command::Setstore(a) => setstore::run(ctx, a).await,
        Command::Set(a) => set::run(ctx, a).await,
        // Already run before any context was made; they need none.
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(ctx.quiet(), a),
        Command::Version => {
            println!(
                "coffer {} (repository format {})",
                env!("CARGO_PKG_VERSION"),
                coffer_engine::REPO_FORMAT
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Exit status of a step that synced everything it could read but found
/// `damaged` objects in the store (unreadable commits of another device).
pub const EXIT_DAMAGED: u8 = 3;

/// Exit status for a sync step: 1 with problems, [`EXIT_DAMAGED`] if the only
/// trouble is damage in the store, else 0.
pub fn step_status(problems: usize, damaged: usize) -> ExitCode {
    match (problems, damaged) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(EXIT_DAMAGED),
        _ => ExitCode::FAILURE,
    }
}

/// Tells, once, what is damaged in the store and the way out.
pub fn report_damage<'a>(damaged: impl IntoIterator<Item = &'a String>) {
    let lines: std::collections::BTreeSet<&String> = damaged.into_iter().collect();
    if lines.is_empty() {
        return;
    }
    for d in &lines {
        eprintln!("coffer: {d}");
    }
    eprintln!(
        "coffer: everything else synced; `coffer check STORE` lists the damage, `coffer distrust STORE DEVICE` stops reading that device's log (exit {EXIT_DAMAGED})"
    );
}

/// How a push or a pull (`what`) ended, for the folder's status: `Ok`, or why
/// it failed, or how many problems left it incomplete.
pub fn half_outcome(
    outcome: Result<usize, &coffer_engine::Error>,
    what: &str,
) -> Result<(), String> {
    match outcome {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{what} incomplete: {n} problem(s)")),
        Err(e) => Err(crate::output::one_line(&anyhow::Error::new(e.clone()))),
    }
}

/// Records how a step ended in the folder's status (`coffer status DIR` shows
/// it); a failure to record is only logged.
pub fn record_step(
    folder: &coffer_engine::Folder,
    outcome: &coffer_engine::StepOutcome,
) -> Option<coffer_engine::FolderStatus> {
    coffer_engine::FolderStatus::record_step(folder, outcome)
        .map_err(|e| tracing::warn!("cannot record the folder status: {e}"))
        .ok()
}

/// Exit status for a command that finished but reported problems.
pub fn status(problems: usize) -> ExitCode {
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A repository path argument: `.` (or empty) means the whole folder (`None`).
/// Takes any bytes (`OsStr`): a name need not be UTF-8.
pub fn path_or_all(arg: &std::ffi::OsStr) -> anyhow::Result<Option<RepoPath>> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = arg.as_bytes();
    while let Some(rest) = bytes.strip_suffix(b"/") {
        bytes = rest;
    }
    Ok(match bytes {
        b"" | b"." => None,
        p => Some(RepoPath::new(p.to_vec())?),
    })
}
