//! External tools some tests drive: a headless Chromium (through Node and
//! playwright-core, by `browser/page-check.mjs`) to check a daemon's status page as
//! a browser renders it, and Python's `prometheus_client` to parse its metrics
//! with the reference Prometheus parser.
//!
//! `scripts/test` installs them (`scripts/test-tools`, cached in
//! `~/.cache/coffer-test`) and exports their paths: `COFFER_TEST_PYTHON`,
//! `COFFER_TEST_NODE`, `COFFER_TEST_CHROMIUM`, `COFFER_TEST_BROWSER_DIR`. A test
//! that needs one fails — never skips — when its variable is missing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The path in `var`, which must exist.
fn tool(var: &str, what: &str) -> PathBuf {
    let path = match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ if ci() => panic!(
            "{var} is not set under CI=1: this test needs {what}, which scripts/test installs and exports as {var}; CI must run the tests through scripts/test"
        ),
        _ => panic!(
            "{var} is not set: this test needs {what}; run the tests through scripts/test, which installs it (cached in ~/.cache/coffer-test) and exports {var} (or `eval \"$(scripts/test-tools)\"` first)"
        ),
    };
    assert!(
        path.exists(),
        "{var}={} does not exist: rerun scripts/test, which reinstalls {what}",
        path.display()
    );
    path
}

/// The venv Python with `prometheus_client` (`COFFER_TEST_PYTHON`).
pub fn python() -> PathBuf {
    tool("COFFER_TEST_PYTHON", "a Python with prometheus_client")
}

/// Node, to run `browser/page-check.mjs` (`COFFER_TEST_NODE`).
pub fn node() -> PathBuf {
    tool("COFFER_TEST_NODE", "Node (to drive a headless Chromium)")
}

/// The headless Chromium executable (`COFFER_TEST_CHROMIUM`).
pub fn chromium() -> PathBuf {
    tool("COFFER_TEST_CHROMIUM", "a headless Chromium")
}

/// The directory whose `node_modules` holds playwright-core (`COFFER_TEST_BROWSER_DIR`).
pub fn browser_dir() -> PathBuf {
    tool(
        "COFFER_TEST_BROWSER_DIR",
        "playwright-core (to drive a headless Chromium)",
    )
}

/// `<workspace>/target/test-artifacts`, created: where tests leave screenshots.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What `page-check.mjs` saw.
#[derive(Debug, Clone)]
pub struct PageCheck {
    /// The text appeared in time (and, when asked, the page logged no error).
    pub ok: bool,
    /// The element's `innerText` when the check ended (the last seen on a timeout).
    pub text: String,
    /// From the start of the page load until the text appeared (or the timeout).
    pub elapsed_ms: u64,
    /// The result of [`PageOptions::eval`], as JSON.
    pub eval: Option<serde_json::Value>,
    /// Console errors and uncaught exceptions of the page.
    pub console_errors: Vec<String>,
}

/// Options of [`page_check_with`]; `Default` is: whole `body`, 10 s, no
/// screenshot, 1280x720, console errors allowed, no eval.
#[derive(Debug, Clone)]
pub struct PageOptions<'a> {
    /// CSS selector of the element whose text is awaited (default `body`).
    pub selector: Option<&'a str>,
    /// Full-page screenshot, written whether or not the text appeared.
    pub screenshot: Option<&'a Path>,
    pub timeout: Duration,
    /// Viewport width and height, e.g. `(390, 844)` for a phone.
    pub viewport: Option<(u32, u32)>,
    /// Not ok if the page logged a console error or threw.
    pub expect_no_console_errors: bool,
    /// A JavaScript expression evaluated in the page once the text appeared; its
    /// JSON value is [`PageCheck::eval`] (a promise is awaited). Throwing panics.
    pub eval: Option<&'a str>,
}

impl Default for PageOptions<'_> {
    fn default() -> Self {
        PageOptions {
            selector: None,
            screenshot: None,
            timeout: Duration::from_secs(10),
            viewport: None,
            expect_no_console_errors: false,
            eval: None,
        }
    }
}

/// Opens `url` in headless Chromium and waits until the element matched by
/// `selector` (default `body`) shows `wait_text` in its `innerText` — the page
/// may change it by script (EventSource, timers) without reloading. Returns
/// `ok: false` on timeout; panics if the browser or the page fails otherwise.
pub fn page_check(
    url: &str,
    wait_text: &str,
    selector: Option<&str>,
    screenshot: Option<&Path>,
    timeout: Duration,
) -> PageCheck {
    page_check_with(
        url,
        wait_text,
        &PageOptions {
            selector,
            screenshot,
            timeout,
            ..PageOptions::default()
        },
    )
}

/// [`page_check`] with every option.
pub fn page_check_with(url: &str, wait_text: &str, o: &PageOptions<'_>) -> PageCheck {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/page-check.mjs");
    let timeout_ms = o.timeout.as_millis().max(1);
    let mut c = Command::new(node());
    c.arg(&script)
        .arg(url)
        .arg("--wait-text")
        .arg(wait_text)
        .arg("--timeout-ms")
        .arg(timeout_ms.to_string());
    if let Some(s) = o.selector {
        c.arg("--selector").arg(s);
    }
    if let Some(p) = o.screenshot {
        c.arg("--screenshot").arg(p);
    }
    if let Some((w, h)) = o.viewport {
        c.arg("--viewport").arg(format!("{w}x{h}"));
    }
    if o.expect_no_console_errors {
        c.arg("--expect-no-console-errors");
    }
    if let Some(js) = o.eval {
        c.arg("--eval").arg(js);
    }
    c.env("COFFER_TEST_CHROMIUM", chromium())
        .env("COFFER_TEST_BROWSER_DIR", browser_dir());
    // Loopback pages are reached directly.
    for var in crate::env::PROXY_VARS {
        c.env_remove(var);
    }
    // Browser start-up and screenshot come on top of the wait.
    let limit = o.timeout + Duration::from_secs(90);
    let (code, stdout, stderr) = run_with_limit(c, None, limit, "page-check.mjs");
    if code != Some(0) && code != Some(1) {
        panic!(
            "page-check.mjs {url} failed (exit {code:?}): {}{}",
            stderr.trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", stdout.trim())
            }
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("page-check.mjs printed no JSON line ({e}): stdout {stdout:?}, stderr {stderr:?}")
    });
    PageCheck {
        ok: v["ok"].as_bool().unwrap(),
        text: v["text"].as_str().unwrap_or_default().to_string(),
        elapsed_ms: v["elapsed_ms"].as_u64().unwrap_or_default(),
        eval: v.get("eval").cloned(),
        console_errors: v["console_errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Reads the exposition on stdin with `prometheus_client`'s text parser and prints
/// the families as JSON (NaN and infinities as the strings Prometheus writes).
const PARSE_PROMETHEUS: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families

def num(v):
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return v

out = []
try:
    for f in text_string_to_metric_families(sys.stdin.read()):
        out.append({
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [{"name": s.name, "labels": s.labels, "value": num(s.value)} for s in f.samples],
        })
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
json.dump(out, sys.stdout)
"#;

/// Parses a Prometheus text exposition with the reference parser
/// (`prometheus_client.parser.text_string_to_metric_families`) into a JSON list
/// of families `{name, type, help, samples: [{name, labels, value}]}`; a value is
/// a number, or `"NaN"`, `"+Inf"`, `"-Inf"`. Panics with the parser's message if
/// the text does not parse.
///
/// As in that parser, a counter family is named without its `_total` suffix
/// (family `coffer_uploaded_bytes`, sample `coffer_uploaded_bytes_total`), and a
/// histogram's samples are its `_bucket` (label `le`), `_count` and `_sum`.
pub fn parse_prometheus(text: &str) -> serde_json::Value {
    let mut c = Command::new(python());
    c.arg("-c").arg(PARSE_PROMETHEUS);
    let (code, stdout, stderr) = run_with_limit(
        c,
        Some(text.as_bytes()),
        Duration::from_secs(60),
        "prometheus_client parser",
    );
    if code != Some(0) {
        panic!(
            "prometheus_client does not parse the exposition: {}\n--- exposition:\n{text}",
            stderr.trim()
        );
    }
    serde_json::from_str(&stdout).unwrap()
}

/// The value of the sample `name` whose labels include all of `labels`, in the
/// output of [`parse_prometheus`]; `None` if there is none (panics if several match).
pub fn prometheus_sample(
    families: &serde_json::Value,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let matching: Vec<&serde_json::Value> = families
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .filter(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{} samples {name} with labels {labels:?}: {matching:?}",
        matching.len()
    );
    matching.first().map(|s| match &s["value"] {
        serde_json::Value::String(v) if v == "NaN" => f64::NAN,
        serde_json::Value::String(v) if v == "+Inf" => f64::INFINITY,
        serde_json::Value::String(v) if v == "-Inf" => f64::NEG_INFINITY,
        v => v.as_f64().unwrap(),
    })
}

/// Runs `c` with `stdin`, killing it after `limit`: (exit code, stdout, stderr).
fn run_with_limit(
    mut c: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    what: &str,
) -> (Option<i32>, String, String) {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({:?}): {e}", c.get_program()));
    let stdin_thread = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().unwrap();
        // A parser that exits early closes the pipe: its exit status tells why.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = reader(&mut child, true);
    let err = reader(&mut child, false);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            // SIGTERM first: playwright then closes the browser it started.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let term = Instant::now();
            while child.try_wait().unwrap().is_none() && term.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(t) = stdin_thread {
        t.join().unwrap();
    }
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}
