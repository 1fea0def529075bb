//! A small blocking HTTP client (hyper) for the daemon's endpoints: whole
//! replies, and a Server-Sent-Events stream read on its own thread.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::mpsc;
use std::time::Duration;

/// A whole reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn request(url: &str, bearer: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::get(url);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Empty::new()).unwrap()
}

/// GET `url` (with a bearer token if given), within 30 s.
pub fn get(url: &str, bearer: Option<&str>) -> Reply {
    runtime().block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let fetch = async {
            let resp = client.request(request(url, bearer)).await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                content_type,
                body: String::from_utf8(body.to_vec()).unwrap(),
            }
        };
        tokio::time::timeout(Duration::from_secs(30), fetch)
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no reply within 30 s"))
    })
}

/// Follows the SSE stream at `url`: every `data:` line arrives on the
/// receiver, until the stream ends or the receiver is dropped.
pub fn events(url: &str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let url = url.to_string();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let client = Client::builder(TokioExecutor::new()).build_http();
            let resp = client.request(request(&url, None)).await.unwrap();
            assert_eq!(resp.status().as_u16(), 200, "GET {url}");
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return };
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line).trim_end().to_string();
                    if let Some(data) = line.strip_prefix("data:")
                        && tx.send(data.trim_start().to_string()).is_err()
                    {
                        return;
                    }
                }
            }
        });
    });
    rx
}
