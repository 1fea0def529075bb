//! The test tools themselves (`coffer_tests::tools`), without coffer: the headless
//! browser waits for text a page changes by script (a timer, an EventSource), and
//! the Prometheus parser reads a counter and a histogram and rejects bad text.

use coffer_tests::tools::{
    PageOptions, artifacts_dir, page_check, page_check_with, parse_prometheus, prometheus_sample,
};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn page_check_waits_for_text_set_by_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>self-check</title></head>
<body><h1>coffer</h1><p id="state">starting</p>
<script>setTimeout(() => { document.getElementById("state").textContent = "uploaded 42 bytes"; }, 1000);</script>
</body></html>"#,
    )
    .unwrap();
    let shot = artifacts_dir().join("tools-selfcheck-timer.png");
    let _ = std::fs::remove_file(&shot);
    let r = page_check(
        &format!("file://{}", page.display()),
        "uploaded 42",
        Some("#state"),
        Some(&shot),
        Duration::from_secs(20),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(r.text, "uploaded 42 bytes");
    assert!(r.elapsed_ms >= 900, "the text came before the timer: {r:?}");
    assert!(is_png(&shot), "no screenshot at {}", shot.display());
}

#[test]
fn page_check_times_out_and_reports_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        r#"<p id="state">stuck</p><script>console.error("status feed broke");</script>"#,
    )
    .unwrap();
    let shot = artifacts_dir().join("tools-selfcheck-timeout.png");
    let _ = std::fs::remove_file(&shot);
    let r = page_check(
        &format!("file://{}", page.display()),
        "never shown",
        None,
        Some(&shot),
        Duration::from_millis(1500),
    );
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.text, "stuck");
    assert!(r.elapsed_ms >= 1500, "{r:?}");
    assert!(
        r.console_errors
            .iter()
            .any(|e| e.contains("status feed broke")),
        "{r:?}"
    );
    assert!(is_png(&shot), "a timeout still writes the screenshot");
}

/// A page served over HTTP whose number arrives by EventSource, like a daemon's
/// live status page: the connection stays open, so the page never goes idle.
fn serve_live_page() -> String {
    const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>live</title></head>
<body><p>uploaded <span id="n">0</span> bytes</p>
<script>
const es = new EventSource("/events");
es.onmessage = (e) => { document.getElementById("n").textContent = e.data; };
</script></body></html>"#;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || answer(conn));
        }
    });
    fn answer(mut conn: TcpStream) {
        let mut request_line = String::new();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        // Skip the headers.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let path = request_line.split(' ').nth(1).unwrap_or("");
        let _ = match path {
            "/" => write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            ),
            "/events" => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\r\n"
                );
                std::thread::sleep(Duration::from_millis(500));
                let _ = write!(conn, "data: 17\n\n");
                std::thread::sleep(Duration::from_millis(500));
                let _ = write!(conn, "data: 42\n\n");
                // Hold the stream open, as a daemon does, until the browser goes.
                for _ in 0..600 {
                    std::thread::sleep(Duration::from_millis(100));
                    if write!(conn, ": ping\n\n").is_err() {
                        break;
                    }
                }
                Ok(())
            }
            _ => write!(
                conn,
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            ),
        };
    }
    format!("http://{addr}/")
}

#[test]
fn page_check_follows_an_event_stream_on_a_phone_viewport() {
    let url = serve_live_page();
    let r = page_check_with(
        &url,
        "uploaded 42 bytes",
        &PageOptions {
            timeout: Duration::from_secs(20),
            viewport: Some((390, 844)),
            expect_no_console_errors: true,
            eval: Some(
                "({ width: window.innerWidth, n: Number(document.getElementById('n').textContent) })",
            ),
            screenshot: Some(&artifacts_dir().join("tools-selfcheck-live.png")),
            ..PageOptions::default()
        },
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(r.text, "uploaded 42 bytes");
    assert_eq!(r.eval, Some(serde_json::json!({ "width": 390, "n": 42 })));
    assert!(r.console_errors.is_empty(), "{r:?}");
}

const EXPOSITION: &str = "\
# HELP coffer_uploaded_bytes_total Bytes uploaded to the store.
# TYPE coffer_uploaded_bytes_total counter
coffer_uploaded_bytes_total 42
# HELP coffer_push_seconds Duration of pushes.
# TYPE coffer_push_seconds histogram
coffer_push_seconds_bucket{folder=\"docs\",le=\"0.5\"} 1
coffer_push_seconds_bucket{folder=\"docs\",le=\"2\"} 3
coffer_push_seconds_bucket{folder=\"docs\",le=\"+Inf\"} 4
coffer_push_seconds_sum{folder=\"docs\"} 7.25
coffer_push_seconds_count{folder=\"docs\"} 4
";

#[test]
fn parse_prometheus_reads_a_counter_and_a_histogram() {
    let f = parse_prometheus(EXPOSITION);
    let families = f.as_array().unwrap();
    assert_eq!(families.len(), 2, "{f:#}");
    // The parser names a counter family without `_total`, and keeps `le` as written.
    assert_eq!(families[0]["name"], "coffer_uploaded_bytes");
    assert_eq!(families[0]["type"], "counter");
    assert_eq!(families[0]["help"], "Bytes uploaded to the store.");
    assert_eq!(families[1]["name"], "coffer_push_seconds");
    assert_eq!(families[1]["type"], "histogram");
    assert_eq!(families[1]["samples"].as_array().unwrap().len(), 5);

    assert_eq!(
        prometheus_sample(&f, "coffer_uploaded_bytes_total", &[]),
        Some(42.0)
    );
    let docs = ("folder", "docs");
    assert_eq!(
        prometheus_sample(&f, "coffer_push_seconds_bucket", &[docs, ("le", "2")]),
        Some(3.0)
    );
    assert_eq!(
        prometheus_sample(&f, "coffer_push_seconds_bucket", &[docs, ("le", "+Inf")]),
        Some(4.0)
    );
    assert_eq!(
        prometheus_sample(&f, "coffer_push_seconds_sum", &[docs]),
        Some(7.25)
    );
    assert_eq!(
        prometheus_sample(&f, "coffer_push_seconds_count", &[docs]),
        Some(4.0)
    );
    assert_eq!(prometheus_sample(&f, "coffer_missing", &[]), None);
}

#[test]
#[should_panic(expected = "could not convert string to float")]
fn parse_prometheus_rejects_a_malformed_exposition() {
    parse_prometheus(
        "# TYPE coffer_uploaded_bytes_total counter\ncoffer_uploaded_bytes_total forty-two\n",
    );
}
