//! `coffer watch DIR [STORE]`: a daemon that keeps DIR converged with the store.
//!
//! Each step is a `sync` (push, then pull) of the folder, which stays open. A step
//! runs at start, when local changes settle (the watcher's debounced batches), and
//! every `--poll` seconds to apply other devices' commits. When a step fails (store
//! unreachable...), local changes stay journaled in the folder's stat cache and the
//! next attempt backs off exponentially (1 s → 60 s), then everything is caught up
//! by the next successful step. SIGINT/SIGTERM finish the current step and exit 0.
//!
//! Settled local changes are marked in the journal's `pending` tree the moment the
//! watcher reports them — also while a step runs or waits on the store — and
//! cleared by the next successful step that began after them, so they are
//! recorded in the folder even while the store is unreachable.
//!
//! Files the pull writes do raise watcher events; the step they trigger finds them
//! equal to the stat cache and pushes nothing, so they are never echoed back.

use crate::context::{Ctx, Locate};
use crate::ops::events::{Event, Summary};
use crate::ops::server::{self, Listen};
use crate::progress::StatusLine;
use coffer_engine::{
    Folder, FolderStatus, PullReport, PushReport, RepoPath, Repository, StepOutcome,
};
use coffer_watcher::{FolderWatcher, WatchOptions};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to keep in sync (bound to the repository on first use).
    pub dir: PathBuf,
    /// The repository (default: the one DIR is bound to).
    pub store: Option<String>,
    /// Seconds between polls of the store for other devices' commits.
    #[arg(long, default_value_t = 10)]
    pub poll: u64,
    /// Milliseconds a burst of local changes must settle before it is synced.
    #[arg(long, default_value_t = 1000)]
    pub debounce_ms: u64,
    /// Serve a status page, /metrics, /events and /healthz on IP:PORT (port 0:
    /// any free port; the address is printed). Loopback only, unless
    /// --listen-allow-remote.
    #[arg(long, value_name = "ADDR", env = "COFFER_LISTEN")]
    pub listen: Option<String>,
    /// Allow --listen on an address other machines reach (needs
    /// --listen-token-file).
    #[arg(long, requires = "listen")]
    pub listen_allow_remote: bool,
    /// A bearer token (first line; mode 0600) every HTTP request must carry:
    /// `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "listen",
        env = "COFFER_LISTEN_TOKEN_FILE"
    )]
    pub listen_token_file: Option<PathBuf>,
    /// Print JSON events on stdout, one per line (progress, warnings, errors,
    /// conflicts, a summary; see the README's "JSON events").
    #[arg(long)]
    pub json: bool,
    /// A partner's daemon: instead of syncing a repository, send DIR's new and
    /// changed files into the drop of TOKEN (`coffer drop push`) when changes
    /// settle and every --poll seconds.
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["store", "listen"])]
    pub drop: Option<PathBuf>,
}

/// `--request-budget` of the daemon unless given: a request is retried this long
/// before the step fails and the daemon's own backoff takes over.
pub const REQUEST_BUDGET_SECS: u64 = 60;

/// Longest wait between attempts while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(token) = &a.drop {
        return drop_watch(ctx, &a, token).await;
    }
    let listen = a
        .listen
        .as_deref()
        .map(|addr| Listen::new(addr, a.listen_allow_remote, a.listen_token_file.as_deref()))
        .transpose()?;
    let store = match a.store {
        Some(s) => s,
        None => super::sync::bound_store(&a.dir)?,
    };
    let (repo, opened) = ctx.repo(&store, Locate::Existing).await?;
    let folder = Folder::open(&a.dir, repo.id(), &opened.url, true)?;
    introduce(ctx, &folder, &opened.url, a.poll.max(1));
    if let Some(listen) = listen {
        let addr = server::start(listen, ctx.ops.clone(), ctx.window.clone()).await?;
        eprintln!("coffer: status page on http://{addr}/ (also /metrics, /events, /healthz)");
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let opts = WatchOptions {
        debounce: Duration::from_millis(a.debounce_ms),
        ..WatchOptions::default()
    };
    let (changes, stop) = spawn_watcher(folder.root().to_path_buf(), opts)?;
    let poll = Duration::from_secs(a.poll.max(1));
    let mut pacing = Pacing {
        poll,
        backoff: Duration::from_secs(1),
        store: store.clone(),
    };
    ctx.say(format!(
        "watching {} (polling {store} every {}s)",
        folder.root().display(),
        poll.as_secs()
    ));
    let mut changes = changes;
    let mut line = StatusLine::new(ctx.quiet());
    let mut stopping = false;
    let mut told = Told::default();
    loop {
        line.clear();
        // Changes that settle while the step runs (or waits on the store) are
        // journaled at once all the same.
        let mut changed_meanwhile = false;
        ctx.ops.step_started();
        let began = Instant::now();
        let mut halves = StepOutcome::default();
        let outcome = {
            let step = step(ctx, &repo, &folder, &mut told, &mut halves);
            tokio::pin!(step);
            loop {
                tokio::select! {
                    r = &mut step => break r,
                    Some(b) = changes.recv() => {
                        record_changes(ctx, &folder, &b);
                        changed_meanwhile = true;
                    }
                    _ = interrupt.recv() => stopping = true,
                    _ = terminate.recv() => stopping = true,
                }
            }
        };
        step_ended(ctx, &folder, &outcome, &halves, began);
        if stopping {
            break;
        }
        let wait = pacing.after(&outcome, changed_meanwhile, &folder, &mut line);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // A gone watcher disables this branch; polling goes on.
            Some(b) = changes.recv() => record_changes(ctx, &folder, &b),
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    line.clear();
    stop.store(true, Ordering::Relaxed);
    ctx.say("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Tells how a step ended: the live state, metrics and events, and the
/// folder's status (`coffer status DIR`).
fn step_ended(
    ctx: &Ctx,
    folder: &Folder,
    outcome: &anyhow::Result<()>,
    halves: &StepOutcome,
    began: Instant,
) {
    // Paths that could not be synced are told as their own error events and
    // counted (`coffer_errors_total{kind="path"}`); the daemon is failing only
    // when a step itself fails (`coffer status DIR` records both).
    let error = outcome.as_ref().err().map(crate::output::one_line);
    if let Some(e) = &error {
        ctx.ops.emit(Event::Error {
            message: e.clone(),
            fatal: true,
        });
    }
    ctx.ops
        .step_ended("sync", began.elapsed().as_secs_f64(), error);
    if let Some(st) = super::record_step(folder, halves) {
        show_local(ctx, folder, &st);
    }
}

/// When the next step runs: at once if changes settled during the last one,
/// after the poll interval if it succeeded, after a doubling backoff (up to
/// [`MAX_BACKOFF`]) while steps fail.
struct Pacing {
    poll: Duration,
    backoff: Duration,
    store: String,
}

impl Pacing {
    fn after(
        &mut self,
        outcome: &anyhow::Result<()>,
        changed_meanwhile: bool,
        folder: &Folder,
        line: &mut StatusLine,
    ) -> Duration {
        match outcome {
            Ok(()) if changed_meanwhile => {
                // The step may have scanned before those changes: go again now
                // (marks are cleared only after a step that began after them).
                self.backoff = Duration::from_secs(1);
                Duration::ZERO
            }
            Ok(()) => {
                // Everything marked before this step was scanned and pushed by it.
                if let Err(e) = folder.journal().clear_pending() {
                    tracing::warn!("cannot clear the journaled changes: {e}");
                }
                self.backoff = Duration::from_secs(1);
                line.show(format!(
                    "in sync with {}; polling every {}s; last step",
                    self.store,
                    self.poll.as_secs()
                ));
                self.poll
            }
            Err(e) => {
                eprintln!(
                    "coffer: sync failed ({}); changes stay journaled, retrying in {}s",
                    crate::output::one_line(e),
                    self.backoff.as_secs()
                );
                let w = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                line.show(format!(
                    "sync failing; {} change(s) journaled; retry {}s after the last attempt",
                    folder.journal().pending_len(),
                    w.as_secs()
                ));
                w
            }
        }
    }
}

/// Tells the live state who this daemon is, the devices this folder has read
/// and its local changes.
fn introduce(ctx: &Ctx, folder: &Folder, store: &str, poll: u64) {
    let device = folder.device().id().to_string();
    ctx.ops.describe(
        folder.root().display().to_string(),
        store.to_string(),
        device,
        poll,
    );
    match folder.journal().all_heads() {
        Ok(heads) => {
            for (d, head) in heads {
                ctx.ops.device_seen(d.to_string(), head.seq, None);
            }
        }
        Err(e) => tracing::warn!("cannot read the logs seen: {e}"),
    }
    match FolderStatus::record_local(folder) {
        Ok(st) => show_local(ctx, folder, &st),
        Err(e) => tracing::warn!("cannot record the folder status: {e}"),
    }
}

/// The local half of a folder status into the live state.
fn show_local(ctx: &Ctx, folder: &Folder, st: &FolderStatus) {
    ctx.ops.local(
        (st.pending + st.pending_deletes) as u64,
        st.pending_bytes,
        &st.conflicts,
        folder.root(),
    );
}

fn record_changes(ctx: &Ctx, folder: &Folder, batch: &coffer_watcher::Batch) {
    tracing::debug!(
        paths = batch.paths.len(),
        rescan = batch.rescan,
        "local changes settled"
    );
    if let Err(e) = journal_changes(folder, batch) {
        tracing::warn!("cannot journal local changes: {e}");
    }
    // `coffer status` reads this while the daemon holds the journal.
    match FolderStatus::record_local(folder) {
        Ok(st) => show_local(ctx, folder, &st),
        Err(e) => tracing::warn!("cannot record the folder status: {e}"),
    }
}

/// Marks the changed paths in the journal at once (so they are on disk, in the
/// folder, before any network is involved); the next successful step clears them.
fn journal_changes(folder: &Folder, batch: &coffer_watcher::Batch) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let journal = folder.journal();
    for path in &batch.paths {
        if let Ok(rel) = path.strip_prefix(folder.root())
            && let Ok(p) = coffer_engine::RepoPath::new(rel.as_os_str().as_bytes().to_vec())
        {
            journal.mark_pending(&p)?;
        }
    }
    journal.flush()?;
    Ok(())
}

/// What this daemon has told already, so that each step does not repeat it.
#[derive(Debug, Default)]
struct Told {
    /// Damage in the store (told once each).
    damaged: BTreeSet<String>,
    /// The special files the last push skipped (told again when they change).
    special: Vec<RepoPath>,
}

/// One sync step; problems with single paths are reported but do not fail it.
/// `halves` tells how its push and its pull went, for the folder's status.
async fn step(
    ctx: &Ctx,
    repo: &Repository,
    folder: &Folder,
    told: &mut Told,
    halves: &mut StepOutcome,
) -> anyhow::Result<()> {
    let began = Instant::now();
    let pushed =
        coffer_engine::push(repo, folder, &ctx.upload_options(), ctx.progress.as_ref()).await;
    let problems = pushed.as_ref().map(|r| r.problems.len());
    halves.push = Some(super::half_outcome(problems, "push"));
    let pushed = pushed?;
    // Counted now: the pull may fail.
    let push = super::push::tell(ctx, &pushed);
    let pulled = coffer_engine::pull_after_push(repo, folder, &pushed, ctx.progress.as_ref()).await;
    let errors = pulled.as_ref().map(|r| r.errors.len());
    halves.pull = Some(super::half_outcome(errors, "pull"));
    let pulled = pulled?;
    report(ctx, &pushed, &pulled, told);
    let pull = super::pull::tell(ctx, &pulled);
    ctx.ops.emit(Event::Summary(Summary {
        ok: push.problems + push.damaged + pull.errors + pull.damaged == 0,
        duration_seconds: began.elapsed().as_secs_f64(),
        push: Some(push),
        pull: Some(pull),
        ..Summary::default()
    }));
    Ok(())
}

fn report(ctx: &Ctx, pushed: &PushReport, pulled: &PullReport, told: &mut Told) {
    for p in &pushed.problems {
        eprintln!("coffer: {p}");
    }
    for e in &pulled.errors {
        eprintln!("coffer: {e}");
    }
    if pushed.skipped_special != told.special {
        if let Some(n) = coffer_engine::special_notice(&pushed.skipped_special) {
            eprintln!("coffer: note: {n}");
        }
        told.special.clone_from(&pushed.skipped_special);
    }
    let new: Vec<&String> = pushed
        .damaged
        .iter()
        .chain(&pulled.damaged)
        .filter(|d| told.damaged.insert((*d).clone()))
        .collect();
    super::report_damage(new);
    let changed =
        pushed.commit.is_some() || pulled.files_written + pulled.deleted + pulled.dirs_created > 0;
    if changed {
        ctx.say(format!(
            "synced: pushed {} change(s), pulled {} file(s), {} deleted, {} conflict copies",
            pushed.changes, pulled.files_written, pulled.deleted, pulled.conflict_copies
        ));
    }
}

/// `watch --drop TOKEN DIR`: a partner's daemon (`engine/DESIGN.md` §4c). A
/// failed push is retried after a doubling backoff (up to [`MAX_BACKOFF`]);
/// a token past its expiry ends the daemon with its error.
async fn drop_watch(ctx: &Ctx, a: &Args, token: &std::path::Path) -> anyhow::Result<ExitCode> {
    let token = coffer_engine::DropToken::read_file(token)?;
    let opened = ctx.store(&token.store, Locate::Existing).await?;
    let opts = WatchOptions {
        debounce: Duration::from_millis(a.debounce_ms),
        ..WatchOptions::default()
    };
    let (mut changes, stop) = spawn_watcher(a.dir.clone(), opts)?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let poll = Duration::from_secs(a.poll.max(1));
    let push = super::drop::push_options(ctx, None);
    ctx.say(format!(
        "watching {} for drop {} (and every {}s)",
        a.dir.display(),
        token.name,
        poll.as_secs()
    ));
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match super::drop::push_once(ctx, &opened.store, &token, &a.dir, &push).await {
            Ok(_) => {
                backoff = Duration::from_secs(1);
                poll
            }
            Err(e) if expired(&e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
            Err(e) => {
                eprintln!("coffer: {}", crate::output::one_line(&e));
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(_) = changes.recv() => {}
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    ctx.say("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Whether `e` is a drop token's expiry (which no retry cures).
fn expired(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<coffer_engine::Error>(),
            Some(coffer_engine::Error::Revoked(_))
        )
    })
}

/// Runs the watcher on its own thread; settled batches arrive on the channel.
fn spawn_watcher(
    root: PathBuf,
    opts: WatchOptions,
) -> anyhow::Result<(
    tokio::sync::mpsc::Receiver<coffer_watcher::Batch>,
    Arc<AtomicBool>,
)> {
    let mut watcher = FolderWatcher::new(&root, opts).map_err(anyhow::Error::msg)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("coffer-watcher".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(batch) = watcher.next_batch(Duration::from_millis(250))
                    && tx.blocking_send(batch).is_err()
                {
                    break;
                }
            }
        })?;
    Ok((rx, stop))
}
