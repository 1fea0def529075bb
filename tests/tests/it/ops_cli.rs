//! The CLI around the sync itself, on a local store: shell completions and man
//! pages (which need no coffer home), what `status DIR` tells of the last push
//! and the last pull, `get` failing without a success line, and the special
//! files (FIFOs, sockets) a push skips.

use crate::{arg, env};
use coffer_tests::env::{Env, Run};
use std::fs;
use std::path::Path;

/// Runs `coffer ARGS...` with no home directory to be found (no `COFFER_HOME`,
/// `HOME` or `XDG_CONFIG_HOME`): any command that needs its home fails.
fn homeless(e: &Env, args: &[&str]) -> Run {
    let out = e
        .cmd()
        .env("COFFER_HOME", "")
        .env_remove("HOME")
        .env_remove("XDG_CONFIG_HOME")
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

/// Asserts `r` succeeded and printed something; returns its stdout.
fn printed(r: Run, what: &str) -> String {
    assert!(r.ok(), "{what}: {:?}: {}", r.code, r.stderr);
    assert!(!r.stdout.is_empty(), "{what}: nothing on stdout");
    r.stdout
}

/// Asserts `r` failed with exactly one line on stderr; returns it.
fn one_line_error(r: &Run) -> &str {
    assert!(!r.ok(), "should have failed: {}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(lines[0].starts_with("coffer: error: "), "{}", r.stderr);
    lines[0]
}

#[test]
fn completions_need_no_home_and_name_the_commands() {
    let e = env();
    // The control: a command that builds its context cannot run here.
    let version = homeless(&e, &["version"]);
    assert!(
        !version.ok() && version.stderr.contains("home"),
        "{version:?}"
    );
    let bash = printed(homeless(&e, &["completions", "bash"]), "bash");
    for word in ["complete -F _coffer", "push", "pull", "watch", "status"] {
        assert!(bash.contains(word), "bash script lacks {word}");
    }
    let zsh = printed(homeless(&e, &["completions", "zsh"]), "zsh");
    assert!(zsh.starts_with("#compdef coffer"), "{}", &zsh[..80]);
    assert!(zsh.contains("push"));
    let fish = printed(homeless(&e, &["completions", "fish"]), "fish");
    assert!(fish.contains("complete -c coffer"));
    assert!(fish.contains("watch"));
    for shell in ["elvish", "powershell"] {
        let script = printed(homeless(&e, &["completions", shell]), shell);
        assert!(script.contains("coffer"), "{shell}");
    }
    let r = homeless(&e, &["completions", "tcsh"]);
    assert!(!r.ok() && r.stderr.contains("tcsh"), "{}", r.stderr);
}

/// The `.TH` line of a roff page, which must come right after clap_mangen's
/// two-line `.ie`/`.el` preamble.
fn title_line(page: &str) -> &str {
    page.lines()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default()
}

#[test]
fn man_prints_coffer_1_and_writes_a_page_per_command() {
    let e = env();
    let page = printed(homeless(&e, &["man"]), "man");
    assert!(title_line(&page).starts_with(".TH coffer 1 "), "{page}");
    assert!(page.contains("completions") && page.contains("push"));

    let dir = e.path("share/man/man1");
    let r = homeless(&e, &["man", "--out", &arg(&dir)]);
    assert!(r.ok() && r.stdout.is_empty(), "{:?}: {}", r.code, r.stderr);
    for (file, title) in [
        ("coffer.1", "coffer"),
        ("coffer-push.1", "coffer-push"),
        ("coffer-watch.1", "coffer-watch"),
        ("coffer-man.1", "coffer-man"),
    ] {
        let text = fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            title_line(&text).starts_with(&format!(".TH {title} 1 ")),
            "{file}: {}",
            title_line(&text)
        );
    }
    assert!(!dir.join("coffer-help.1").exists());
    render_if_man_is_installed(&dir.join("coffer-push.1"));

    fs::write(e.path("file"), "not a directory").unwrap();
    let r = homeless(&e, &["man", "--out", &arg(&e.path("file/man1"))]);
    let line = one_line_error(&r);
    assert!(line.contains("cannot create"), "{line}");
}

/// Renders `page` with `man -l` where man is installed: it must come out with
/// its name and synopsis (skipped on machines without man).
fn render_if_man_is_installed(page: &Path) {
    let Ok(out) = std::process::Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("coffer-push - Upload"), "{text}");
    assert!(text.contains("SYNOPSIS"), "{text}");
}

/// A repository `store` and a folder `dir` holding `a.txt`, pushed once.
fn pushed_folder(e: &Env) -> std::path::PathBuf {
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.txt"), "from the repository").unwrap();
    fs::write(dir.join("b.txt"), "b").unwrap();
    e.ok(&["push", &arg(&dir), "store"]);
    dir
}

/// The line of `status DIR` that starts with `label`.
fn status_line(e: &Env, dir: &Path, label: &str) -> String {
    let text = e.ok(&["status", &arg(dir)]).stdout;
    text.lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in:\n{text}"))
        .to_string()
}

#[test]
fn status_tells_the_last_push_and_the_last_pull_apart() {
    let e = env();
    let dir = pushed_folder(&e);
    let push = status_line(&e, &dir, "last push:");
    assert!(
        push.ends_with("Z (ok)") && !push.contains("never"),
        "{push}"
    );
    assert_eq!(status_line(&e, &dir, "last pull:"), "last pull:  never");
    let json = e.ok(&["status", &arg(&dir), "--json"]).stdout;
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let at = s["last_push"]["at_ms"].as_u64().unwrap();
    assert_eq!(s["last_push"]["ok_ms"].as_u64(), Some(at), "{s}");
    assert!(s["last_pull"].is_null(), "{s}");

    e.ok(&["pull", "store", &arg(&dir)]);
    assert_eq!(status_line(&e, &dir, "last push:"), push);
    let pull = status_line(&e, &dir, "last pull:");
    assert!(pull.ends_with("Z (ok)"), "{pull}");
    let s: serde_json::Value =
        serde_json::from_str(&e.ok(&["status", &arg(&dir), "--json"]).stdout).unwrap();
    assert!(s["last_pull"]["ok_ms"].as_u64().unwrap() >= at, "{s}");
    assert_eq!(s["last_push"]["at_ms"].as_u64(), Some(at), "{s}");
}

#[test]
fn a_get_that_cannot_write_prints_no_success_line() {
    let e = env();
    pushed_folder(&e);
    // A file of other content is in the way (kept without --force).
    fs::write(e.path("a.txt"), "mine").unwrap();
    let r = e.fails(&["get", "store", "a.txt"]);
    let line = one_line_error(&r);
    assert!(line.contains("other content"), "{line}");
    assert_eq!(fs::read_to_string(e.path("a.txt")).unwrap(), "mine");

    let r = e.fails(&["get", "store", "nothing-here.txt"]);
    let line = one_line_error(&r);
    assert!(line.contains("nothing-here.txt"), "{line}");

    // Two paths of a directory in the way: each named, then one error line.
    let out = e.path("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("a.txt"), "mine").unwrap();
    fs::write(out.join("b.txt"), "mine too").unwrap();
    let r = e.fails(&["get", "store", ".", &arg(&out)]);
    assert!(!r.stderr.contains("wrote"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("other content").count(), 2, "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("coffer: error: incomplete: 2 path(s) not written"),
        "{}",
        r.stderr
    );

    let ok = e.ok(&["get", "store", "a.txt", &arg(&e.path("fresh.txt"))]);
    assert!(ok.stderr.contains("wrote"), "{}", ok.stderr);
}

/// Makes a FIFO at `path` with mkfifo(1).
pub(crate) fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn push_and_sync_say_once_which_special_files_they_skipped() {
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), "a").unwrap();
    mkfifo(&dir.join("sub/pipe"));
    let r = e.ok(&["push", &arg(&dir), "store"]);
    assert_eq!(r.stderr.matches("special file").count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("skipped 1 special file(s)") && r.stderr.contains(": sub/pipe"),
        "{}",
        r.stderr
    );

    let _socket = std::os::unix::net::UnixListener::bind(dir.join("z.sock")).unwrap();
    let r = e.ok(&["sync", &arg(&dir)]);
    assert_eq!(r.stderr.matches("special file").count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("skipped 2 special file(s)") && r.stderr.contains("sub/pipe, z.sock"),
        "{}",
        r.stderr
    );
    let ls = e.ok(&["ls", "store"]).stdout;
    assert!(ls.contains("a.txt") && !ls.contains("pipe") && !ls.contains("z.sock"));

    fs::write(dir.join(".cofferignore"), "sub/\n*.sock\n").unwrap();
    let r = e.ok(&["push", &arg(&dir), "store"]);
    assert!(!r.stderr.contains("special file"), "{}", r.stderr);
}
