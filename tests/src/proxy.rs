//! A fault-injecting HTTP proxy in front of an S3 server (Garage in the tests).
//!
//! It listens on 127.0.0.1, forwards every request unchanged (the `Host` header is
//! kept, so SigV4 signatures still verify), and, per request and with seeded
//! randomness, can instead:
//! - answer `503 SlowDown` (S3 XML body; none for HEAD) or `500 InternalError`;
//! - drop the connection without an answer ("reset");
//! - stall: stop reading a PUT's body half-way, or send half a GET's body and stop;
//! - forward a PUT, let the server store it, then drop the answer;
//! - answer `403 AccessDenied` to everything;
//! - answer everything with a given status and JSON body (an AWS JSON-protocol
//!   error, as KMS gives: `{"__type":"AccessDeniedException","message":"..."}`).
//!
//! Every request is logged (method, path, headers) so tests can check what a client
//! sent, and every injected fault is counted.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Probabilities of each fault, per request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub slow_down: f64,
    pub error_500: f64,
    pub reset: f64,
    pub stall: f64,
    /// For PUTs: forward, then drop the answer.
    pub drop_put_response: f64,
    /// Answer 403 to every request.
    pub deny_all: bool,
    /// Answer every request with this status and JSON body (wins over the rest).
    pub answer: Option<(u16, String)>,
    /// Hold every PUT whose path contains this: never forwarded, never
    /// answered (its client hangs there, e.g. to be killed at that point).
    pub hold_put: Option<String>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug)]
struct State {
    upstream: String,
    faults: Mutex<Faults>,
    rng: Mutex<SmallRng>,
    log: Mutex<Vec<Logged>>,
    injected: Mutex<BTreeMap<&'static str, u64>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

enum Decision {
    Forward,
    SlowDown,
    Error500,
    Reset,
    Stall,
    DropResponse,
    Deny,
    Answer(u16, String),
    Hold,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` URL) on its own runtime.
    pub fn start(upstream: &str, faults: Faults, seed: u64) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults: Mutex::new(faults),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            log: Mutex::new(Vec::new()),
            injected: Mutex::new(BTreeMap::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the fault probabilities from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().expect("faults lock") = faults;
    }

    /// Requests received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().expect("log lock").clone()
    }

    /// How many times each fault was injected.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.state.injected.lock().expect("injected lock").clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn decide(state: &State, method: &str, path: &str) -> Decision {
    let f = state.faults.lock().expect("faults lock").clone();
    if let Some((status, body)) = f.answer {
        return Decision::Answer(status, body);
    }
    if method == "PUT" && f.hold_put.as_deref().is_some_and(|h| path.contains(h)) {
        return Decision::Hold;
    }
    if f.deny_all {
        return Decision::Deny;
    }
    let x: f64 = state.rng.lock().expect("rng lock").random();
    let put = method == "PUT";
    let mut edge = 0.0;
    for (p, d) in [
        (f.slow_down, Decision::SlowDown),
        (f.error_500, Decision::Error500),
        (f.reset, Decision::Reset),
        (f.stall, Decision::Stall),
        (
            if put { f.drop_put_response } else { 0.0 },
            Decision::DropResponse,
        ),
    ] {
        edge += p;
        if x < edge {
            return d;
        }
    }
    Decision::Forward
}

fn count(state: &State, what: &'static str) {
    *state
        .injected
        .lock()
        .expect("injected lock")
        .entry(what)
        .or_default() += 1;
}

fn xml_error(status: StatusCode, code: &str, message: &str, head: bool) -> Response<Body> {
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
        ))
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(body).map_err(|never| match never {}).boxed())
        .expect("valid response")
}

fn json_answer(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("a valid status"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "fault-proxy")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("valid response")
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.log.lock().expect("log lock").push(Logged {
        method: method.clone(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let head = method == "HEAD";
    match decide(&state, &method, &path) {
        Decision::Hold => {
            count(&state, "hold");
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
        Decision::Answer(status, body) => {
            count(&state, "answer");
            drain(req).await;
            Ok(json_answer(status, body))
        }
        Decision::Deny => {
            count(&state, "403");
            Ok(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied",
                head,
            ))
        }
        Decision::SlowDown => {
            count(&state, "slowdown");
            drain(req).await;
            Ok(xml_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
                head,
            ))
        }
        Decision::Error500 => {
            count(&state, "500");
            drain(req).await;
            Ok(xml_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error.",
                head,
            ))
        }
        Decision::Reset => {
            count(&state, "reset");
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        }
        Decision::Stall if method == "PUT" => {
            count(&state, "stall");
            stall_reading(req).await
        }
        Decision::Stall => {
            count(&state, "stall");
            let resp = forward(&state, req).await?;
            Ok(stall_writing(resp))
        }
        Decision::DropResponse => {
            let resp = forward(&state, req).await?;
            count(&state, "dropped");
            drop(resp);
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "injected dropped response",
            ))
        }
        Decision::Forward => {
            let (parts, body) = forward(&state, req).await?.into_parts();
            Ok(Response::from_parts(
                parts,
                Full::new(body).map_err(|never| match never {}).boxed(),
            ))
        }
    }
}

async fn drain(req: Request<Incoming>) {
    let _ = req.into_body().collect().await;
}

/// Sends the request upstream (same method, path, headers); returns the answer
/// with its body collected.
async fn forward(state: &State, req: Request<Incoming>) -> Result<Response<Bytes>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let uri = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    let out = out.body(Full::new(body)).map_err(std::io::Error::other)?;
    let resp = state
        .client
        .request(out)
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// Reads half of a PUT body, then stops reading for a long time.
async fn stall_reading(req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let len: usize = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let mut body = req.into_body();
    let mut read = 0usize;
    while read < len / 2 {
        match body.frame().await {
            Some(Ok(f)) => read += f.data_ref().map(|d| d.len()).unwrap_or(0),
            _ => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(120)).await;
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "injected stall",
    ))
}

/// Sends the headers and half the body, then nothing for a long time.
fn stall_writing(resp: Response<Bytes>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let half = body.slice(..body.len() / 2);
    let frames = stalled_body(half);
    Response::from_parts(parts, BodyExt::boxed(StreamBody::new(frames)))
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

/// A body stream: one frame of `first`, then a long silence, then an error.
fn stalled_body(first: Bytes) -> impl futures::Stream<Item = FrameResult> + Send + Sync + 'static {
    futures::stream::unfold(Some(first), |state| async move {
        match state {
            Some(b) => Some((Ok(Frame::data(b)), None)),
            None => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "injected stall",
                    )),
                    None,
                ))
            }
        }
    })
}
