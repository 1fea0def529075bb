//! The daemon's HTTP server (`watch --listen ADDR`), on axum: `/` the status
//! page (embedded, no external asset), `/api/status` the live state as JSON,
//! `/metrics` Prometheus (OpenMetrics text), `/events` the JSON events as
//! Server-Sent Events, `/healthz` for probes.
//!
//! Loopback addresses only, unless `--listen-allow-remote`, which requires a
//! bearer token read from a file only its owner can read. With a token every
//! route asks for `Authorization: Bearer TOKEN` or `?token=TOKEN` (the page
//! passes its own `?token=` on to its requests: an `EventSource` cannot send
//! headers).

use super::Ops;
use super::events::Event;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use coffer_engine::UploadWindow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The status page: HTML, CSS and JavaScript in one file.
const PAGE: &str = include_str!("page.html");

/// `/healthz` is healthy when the last step succeeded within this many polls.
pub const HEALTHY_POLLS: u64 = 3;

/// What the handlers share.
#[derive(Debug, Clone)]
struct App {
    ops: Arc<Ops>,
    window: Arc<UploadWindow>,
    token: Option<Arc<str>>,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Listen {
    /// Checks `--listen` and its companions: a non-loopback address needs
    /// `allow_remote` and a token file; the token file must be private.
    pub fn new(
        addr: &str,
        allow_remote: bool,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Listen> {
        let addr: SocketAddr = addr.parse().map_err(|e| {
            anyhow::anyhow!("--listen {addr:?}: expected IP:PORT like 127.0.0.1:7878 ({e})")
        })?;
        if !addr.ip().is_loopback() && !allow_remote {
            anyhow::bail!(
                "--listen {addr}: not a loopback address; add --listen-allow-remote and --listen-token-file to serve other machines"
            );
        }
        let token = token_file.map(read_token).transpose()?;
        if !addr.ip().is_loopback() && token.is_none() {
            anyhow::bail!("--listen-allow-remote needs --listen-token-file FILE (a bearer token)");
        }
        Ok(Listen { addr, token })
    }
}

/// The token in `file`: its first line, from a file only its owner can read.
fn read_token(file: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("--listen-token-file {}: {e}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "--listen-token-file {}: readable by others (mode {:o}); chmod 600 it",
            file.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("--listen-token-file {}: {e}", file.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        anyhow::bail!(
            "--listen-token-file {}: the token must be at least 16 characters",
            file.display()
        );
    }
    Ok(token)
}

/// Binds `listen` and serves until the process ends. Returns the bound
/// address (port 0 picks one).
pub async fn start(
    listen: Listen,
    ops: Arc<Ops>,
    window: Arc<UploadWindow>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", listen.addr))?;
    let bound = listener.local_addr()?;
    let app = App {
        ops,
        window,
        token: listen.token.map(Arc::from),
    };
    let router = router(app);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("the status server stopped: {e}");
        }
    });
    Ok(bound)
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/healthz", get(healthz))
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .with_state(app)
}

/// Refuses requests without the token, when there is one; without one (a
/// loopback address), refuses a `Host` other than a loopback name, so a web
/// page cannot reach the server through DNS rebinding.
async fn auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if loopback_host(host) {
            return next.run(req).await;
        }
        return (
            StatusCode::FORBIDDEN,
            "this server answers loopback names only\n",
        )
            .into_response();
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let given = bearer.map(ToString::to_string).or(query);
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response(),
    }
}

/// `127.0.0.1[:port]`, `localhost[:port]`, `[::1][:port]`.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Equality in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE,
    )
}

async fn status(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.ops.snapshot())
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let m = &app.ops.metrics;
    m.upload_window
        .set(i64::try_from(app.window.limit()).unwrap_or(i64::MAX));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    (headers, m.encode())
}

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let l = app.ops.snapshot();
    let window = Duration::from_secs(l.poll_seconds.max(1) * HEALTHY_POLLS);
    // A long step (a first upload) that keeps reaching the store is no
    // failure; one retrying an unreachable store is.
    let busy = l.step_running && l.store_reachable;
    let fresh = app
        .ops
        .since_success()
        .is_some_and(|age| age <= window || busy);
    if l.last_error.is_none() && fresh {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        let why = match &l.last_error {
            Some(e) => format!("failing: {}\n", e.value.message),
            None => format!("no successful step in the last {} s\n", window.as_secs()),
        };
        (StatusCode::SERVICE_UNAVAILABLE, why)
    }
}

/// The event stream, opened by the current state.
async fn events(State(app): State<App>) -> impl IntoResponse {
    let rx = app.ops.events.subscribe();
    let first = state_line(&app.ops);
    let opening = futures::stream::once(async move { sse(first) });
    let ops = app.ops.clone();
    let rest = futures::stream::unfold((rx, ops), |(rx, ops)| async move {
        let mut rx = rx?;
        let line = match rx.recv().await {
            Ok(line) => line,
            // A reader too slow for the bus missed events: it gets the state
            // as it is now, then follows again.
            Err(RecvError::Lagged(_)) => state_line(&ops),
            Err(RecvError::Closed) => return None,
        };
        Some((sse(line), (Some(rx), ops)))
    });
    Sse::new(futures::StreamExt::chain(opening, rest)).keep_alive(KeepAlive::default())
}

/// The current state as an event line.
fn state_line(ops: &Ops) -> String {
    ops.events.line(&Event::State(ops.snapshot().state_event()))
}

fn sse(line: String) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addresses_need_a_private_token() {
        assert!(Listen::new("127.0.0.1:0", false, None).is_ok());
        assert!(Listen::new("[::1]:0", false, None).is_ok());
        let e = Listen::new("0.0.0.0:7878", false, None).unwrap_err();
        assert!(e.to_string().contains("--listen-allow-remote"), "{e}");
        let e = Listen::new("0.0.0.0:7878", true, None).unwrap_err();
        assert!(e.to_string().contains("--listen-token-file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Listen::new("0.0.0.0:7878", true, Some(&f)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = Listen::new("0.0.0.0:7878", true, Some(&f)).unwrap();
        assert_eq!(l.token.as_deref(), Some("0123456789abcdef0123"));
        assert!(Listen::new("localhost:80", false, None).is_err());
    }

    #[test]
    fn only_loopback_names_pass_without_a_token() {
        for ok in [
            "127.0.0.1:7878",
            "localhost:80",
            "[::1]:9",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7878",
            "",
            "10.0.0.1:7878",
            "[::2]:1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
