//! The upload window: how many uploads may be in flight, adapted AIMD-style.
//!
//! Each success grows the limit by `1/limit` (about +1 per window of successes);
//! each SlowDown halves it (never below 1). The store's retry layer reports
//! SlowDowns through [`Congestion`], so the window shrinks while a request is still
//! being retried, not only after it finally fails.

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Receives congestion signals from the store stack.
pub trait Congestion: Send + Sync + std::fmt::Debug {
    /// The store answered 503 SlowDown / 429.
    fn slow_down(&self);
    /// A request succeeded.
    fn success(&self);
}

/// An adaptive limit on concurrent uploads.
#[derive(Debug)]
pub struct UploadWindow {
    max: usize,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
}

/// One slot of the window; released on drop.
#[derive(Debug)]
pub struct WindowPermit {
    window: Arc<UploadWindow>,
}

impl UploadWindow {
    /// A window starting (and capped) at `max` in flight.
    pub fn new(max: usize) -> Arc<UploadWindow> {
        let max = max.max(1);
        Arc::new(UploadWindow {
            max,
            state: Mutex::new(State {
                limit: max as f64,
                in_flight: 0,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> WindowPermit {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < current(&s) {
                    s.in_flight += 1;
                    return WindowPermit {
                        window: Arc::clone(self),
                    };
                }
            }
            notified.await;
        }
    }

    /// The cap the limit never exceeds.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        current(&self.lock())
    }

    /// Uploads in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

fn current(s: &State) -> usize {
    (s.limit.floor() as usize).max(1)
}

impl Congestion for UploadWindow {
    fn slow_down(&self) {
        let mut s = self.lock();
        s.limit = (s.limit / 2.0).max(1.0);
    }

    fn success(&self) {
        {
            let mut s = self.lock();
            s.limit = (s.limit + 1.0 / s.limit).min(self.max as f64);
        }
        self.notify.notify_waiters();
    }
}

impl Drop for WindowPermit {
    fn drop(&mut self) {
        self.window.lock().in_flight -= 1;
        self.window.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn aimd_halves_on_slow_down_and_grows_back() {
        let w = UploadWindow::new(8);
        assert_eq!(w.limit(), 8);
        w.slow_down();
        assert_eq!(w.limit(), 4);
        w.slow_down();
        w.slow_down();
        w.slow_down();
        assert_eq!(w.limit(), 1, "never below one");
        let mut successes = 0;
        while w.limit() < 8 {
            w.success();
            successes += 1;
        }
        // Additive increase: about `limit` successes per step.
        assert!((20..=40).contains(&successes), "{successes}");
    }

    #[tokio::test]
    async fn permits_block_at_the_limit() {
        let w = UploadWindow::new(2);
        let a = w.acquire().await;
        let _b = w.acquire().await;
        assert_eq!(w.in_flight(), 2);
        let w2 = Arc::clone(&w);
        let waiter = tokio::spawn(async move { w2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(a);
        let _c = waiter.await.unwrap();
        assert_eq!(w.in_flight(), 2);
    }
}
