//! A circuit breaker per endpoint, as a pure state machine over injected time.
//!
//! - **Closed**: requests go to the endpoint.
//! - **Open** until a deadline: the endpoint did not answer (reset, refused, timed
//!   out, stalled); requests go elsewhere.
//! - **Half-open**: the deadline passed and one request (the probe) was let
//!   through. Its answer closes the breaker; its failure opens it again for twice
//!   as long (up to [`BreakerPolicy::cap`]).
//!
//! Every transition bumps an *epoch*, and a verdict counts only for the epoch its
//! request was admitted in: the eight uploads that were in flight when a node died
//! open its breaker once, not eight times, and a request that began before the
//! failure cannot close it again.

use std::time::Duration;

/// How long an endpoint that failed is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Skipped this long after its first failure.
    pub base: Duration,
    /// Longest skip after failed probes (each doubles the previous one).
    pub cap: Duration,
}

impl Default for BreakerPolicy {
    /// base 1 s, cap 30 s.
    fn default() -> Self {
        BreakerPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Skipped until `until` (time of the injected clock); `backoff` is how long
    /// this opening lasts.
    Open {
        until: Duration,
        backoff: Duration,
    },
    /// One probe is in flight; it had been skipped for `backoff`.
    HalfOpen {
        backoff: Duration,
    },
}

/// One endpoint's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    state: BreakerState,
    epoch: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            epoch: 0,
        }
    }
}

/// What happened to a breaker after a verdict, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed (or the verdict was stale).
    None,
    /// Now open for this long.
    Opened(Duration),
    /// Answered again: closed.
    Closed,
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When this endpoint may be tried: now if closed or half-open, else the end
    /// of its opening.
    pub fn ready_at(&self, now: Duration) -> Duration {
        match self.state {
            BreakerState::Open { until, .. } => until,
            _ => now,
        }
    }

    /// Lets a request through if the breaker is closed, or makes it the probe if
    /// the opening is over; returns the epoch to report its verdict with. `None`
    /// while open, or while another probe is in flight.
    pub fn admit(&mut self, now: Duration) -> Option<u64> {
        match self.state {
            BreakerState::Closed => Some(self.epoch),
            BreakerState::Open { until, backoff } if until <= now => {
                self.move_to(BreakerState::HalfOpen { backoff });
                Some(self.epoch)
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => None,
        }
    }

    /// Lets a request through whatever the state (every endpoint is skipped and
    /// one must be tried): an open breaker becomes half-open, this request its
    /// probe.
    pub fn force(&mut self) -> u64 {
        if let BreakerState::Open { backoff, .. } = self.state {
            self.move_to(BreakerState::HalfOpen { backoff });
        }
        self.epoch
    }

    /// The endpoint answered (whatever the answer).
    pub fn succeeded(&mut self, epoch: u64) -> Transition {
        if epoch != self.epoch || self.state == BreakerState::Closed {
            return Transition::None;
        }
        self.move_to(BreakerState::Closed);
        Transition::Closed
    }

    /// The endpoint did not answer a request admitted in `epoch`.
    pub fn failed(&mut self, epoch: u64, now: Duration, policy: BreakerPolicy) -> Transition {
        if epoch != self.epoch {
            return Transition::None;
        }
        let backoff = match self.state {
            BreakerState::Closed => policy.base,
            BreakerState::HalfOpen { backoff } => backoff.saturating_mul(2).min(policy.cap),
            BreakerState::Open { .. } => return Transition::None,
        };
        self.move_to(BreakerState::Open {
            until: now.saturating_add(backoff),
            backoff,
        });
        Transition::Opened(backoff)
    }

    /// A request admitted in `epoch` was dropped before its verdict: a dropped
    /// probe frees the endpoint for the next request, which probes instead.
    pub fn abandoned(&mut self, epoch: u64, now: Duration) {
        if epoch != self.epoch {
            return;
        }
        if let BreakerState::HalfOpen { backoff } = self.state {
            self.move_to(BreakerState::Open {
                until: now,
                backoff,
            });
        }
    }

    fn move_to(&mut self, state: BreakerState) {
        self.state = state;
        self.epoch = self.epoch.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BreakerPolicy = BreakerPolicy {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(5),
    };

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_failure_opens_and_the_endpoint_is_skipped_until_the_backoff_ends() {
        let mut b = Breaker::default();
        let e = b.admit(s(0)).unwrap();
        assert_eq!(b.failed(e, s(10), P), Transition::Opened(s(1)));
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: s(11),
                backoff: s(1)
            }
        );
        assert_eq!(b.admit(s(10)), None);
        assert_eq!(b.ready_at(s(10)), s(11));
    }

    #[test]
    fn after_the_backoff_one_probe_goes_through_and_its_answer_closes() {
        let mut b = Breaker::default();
        let e = b.admit(s(0)).unwrap();
        b.failed(e, s(0), P);
        let probe = b.admit(s(1)).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen { backoff: s(1) });
        assert_eq!(b.admit(s(1)), None, "one probe at a time");
        assert_eq!(b.succeeded(probe), Transition::Closed);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit(s(1)).is_some());
    }

    #[test]
    fn failed_probes_double_the_backoff_up_to_the_cap() {
        let mut b = Breaker::default();
        let mut now = s(0);
        let e = b.admit(now).unwrap();
        let mut opened = vec![b.failed(e, now, P)];
        for _ in 0..4 {
            now = b.ready_at(now);
            let probe = b.admit(now).unwrap();
            opened.push(b.failed(probe, now, P));
        }
        let want = [1, 2, 4, 5, 5].map(|n| Transition::Opened(s(n)));
        assert_eq!(opened, want);
        assert_eq!(now, s(1 + 2 + 4 + 5));
    }

    #[test]
    fn verdicts_of_requests_from_an_earlier_epoch_are_ignored() {
        let mut b = Breaker::default();
        let first = b.admit(s(0)).unwrap();
        let second = b.admit(s(0)).unwrap();
        assert_eq!(b.failed(first, s(0), P), Transition::Opened(s(1)));
        // The other in-flight request fails too: still one opening of 1 s.
        assert_eq!(b.failed(second, s(0), P), Transition::None);
        let probe = b.admit(s(1)).unwrap();
        // A request admitted before the failure that answers late closes nothing.
        assert_eq!(b.succeeded(second), Transition::None);
        assert_eq!(b.state(), BreakerState::HalfOpen { backoff: s(1) });
        assert_eq!(b.failed(probe, s(1), P), Transition::Opened(s(2)));
    }

    #[test]
    fn a_dropped_probe_lets_the_next_request_probe() {
        let mut b = Breaker::default();
        let e = b.admit(s(0)).unwrap();
        b.failed(e, s(0), P);
        let probe = b.admit(s(1)).unwrap();
        b.abandoned(probe, s(1));
        let next = b.admit(s(1)).expect("probe again");
        assert_eq!(b.failed(next, s(1), P), Transition::Opened(s(2)));
    }

    #[test]
    fn forcing_an_open_breaker_makes_a_probe() {
        let mut b = Breaker::default();
        let e = b.admit(s(0)).unwrap();
        b.failed(e, s(0), P);
        let probe = b.force();
        assert_eq!(b.state(), BreakerState::HalfOpen { backoff: s(1) });
        assert_eq!(b.succeeded(probe), Transition::Closed);
        // Forcing a closed breaker changes nothing.
        let epoch = b.force();
        assert_eq!(b.admit(s(0)), Some(epoch));
    }
}
