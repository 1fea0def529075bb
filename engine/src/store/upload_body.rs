//! PUT bodies that let a stalled upload be noticed.
//!
//! An in-memory body is handed to the HTTP stack in one piece, so nothing can tell
//! a transfer that stopped moving from one that is merely large. [`WatchedBody`]
//! yields the object in 256 KiB frames (slices, no copy) and stamps
//! [`Progress`] each time the connection takes one; [`watch`] cuts the request when
//! no frame was taken for the stall grace, or when the answer does not start within
//! three graces of the last byte.
//!
//! Under an upload limit ([`super::throttle`]) each frame is at most the
//! limiter's frame and waits for its reservation before it is yielded; the wait
//! defers the watchdog to the reservation's time, so a limit never looks like a
//! stall.

use super::throttle::Limiter;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

const FRAME: usize = 256 * 1024;

/// When a transfer last moved.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
    sent_all: AtomicBool,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent_all: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        self.touch_at(Duration::ZERO);
    }

    /// Counts as progress until `wait` from now (a throttled frame's wait).
    fn touch_at(&self, wait: Duration) {
        let at = self.origin.elapsed() + wait;
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A throttled frame's wait (in a mutex only so that the body is `Sync`).
type Wait = Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// An exact-length body of `data`, in frames, reporting progress.
pub struct WatchedBody {
    data: Bytes,
    progress: Arc<Progress>,
    limiter: Option<Arc<Limiter>>,
    /// The bytes reserved for the next frame, and the wait for them.
    granted: Option<(usize, Option<Wait>)>,
}

impl std::fmt::Debug for WatchedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedBody")
            .field("left", &self.data.len())
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl WatchedBody {
    /// Frames of `data`, each reserved from `limiter` (if any) before it goes.
    pub fn new(data: Bytes, progress: Arc<Progress>, limiter: Option<Arc<Limiter>>) -> Self {
        progress.touch();
        WatchedBody {
            data,
            progress,
            limiter,
            granted: None,
        }
    }

    /// Reserves the next frame's bytes (once) and polls the wait for them.
    fn poll_grant(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        let (n, wait) = self.granted.get_or_insert_with(|| {
            let Some(limiter) = &self.limiter else {
                return (self.data.len().min(FRAME), None);
            };
            let n = self
                .data
                .len()
                .min(usize::try_from(limiter.frame()).unwrap_or(FRAME));
            let wait = limiter.reserve(n as u64);
            if wait.is_zero() {
                return (n, None);
            }
            self.progress.touch_at(wait);
            (n, Some(Mutex::new(limiter.sleep(wait))))
        });
        if let Some(w) = wait {
            let w = w.get_mut().unwrap_or_else(|p| p.into_inner());
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let n = *n;
        self.granted = None;
        Poll::Ready(n)
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.data.is_empty() {
            self.progress.sent_all.store(true, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        let Poll::Ready(n) = self.poll_grant(cx) else {
            return Poll::Pending;
        };
        let frame = self.data.split_to(n);
        self.progress.touch();
        if self.data.is_empty() {
            self.progress.sent_all.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// Runs `request`; `None` if it stalled (see the module docs).
pub async fn watch<F: Future>(
    request: F,
    progress: &Progress,
    grace: Duration,
) -> Option<F::Output> {
    tokio::pin!(request);
    let mut tick = tokio::time::interval((grace / 4).max(Duration::from_millis(20)));
    loop {
        tokio::select! {
            out = &mut request => return Some(out),
            _ = tick.tick() => {
                let limit = if progress.sent_all.load(Ordering::Relaxed) { grace * 3 } else { grace };
                if progress.idle() > limit {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_reassemble_and_mark_the_end() {
        let data: Bytes = (0..1_000_000u32)
            .map(|i| i as u8)
            .collect::<Vec<_>>()
            .into();
        let p = Progress::new();
        let body = WatchedBody::new(data.clone(), p.clone(), None);
        assert_eq!(body.size_hint().exact(), Some(1_000_000));
        assert_eq!(body.collect().await.unwrap().to_bytes(), data);
        assert!(p.sent_all.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_request_without_progress_is_cut() {
        let p = Progress::new();
        let stuck = std::future::pending::<()>();
        let t = Instant::now();
        assert!(watch(stuck, &p, Duration::from_millis(100)).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(
            watch(async { 7 }, &p, Duration::from_millis(100)).await,
            Some(7)
        );
    }
}
