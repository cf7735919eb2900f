//! An adaptive concurrency limit per model (AIMD, as in TCP congestion control).
//!
//! It starts at the configured concurrency, halves on a rate-limit answer (at most once per
//! second, so a burst of 429s from requests already in flight counts as one signal), and grows
//! back by one slot per `limit` successes. When the server names a wait (`Retry-After`), every
//! request to that model waits it out, not only the one that was refused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Minimum time between two cuts of the limit.
const CUT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct AdaptiveLimiter {
    max: f64,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    paused_until: Option<Instant>,
    last_cut: Option<Instant>,
}

/// A slot; released on drop.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a AdaptiveLimiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().in_flight -= 1;
        self.limiter.notify.notify_waiters();
    }
}

impl AdaptiveLimiter {
    pub fn new(max_concurrency: u32) -> Self {
        let max = f64::from(max_concurrency.max(1));
        Self {
            max,
            state: Mutex::new(State {
                limit: max,
                in_flight: 0,
                paused_until: None,
                last_cut: None,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait for a free slot (and for any pause the server asked for).
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            // Created before the check, so a release between the check and the await wakes us.
            let notified = self.notify.notified();
            let pause = {
                let mut s = self.lock();
                match s.paused_until {
                    Some(until) if until > Instant::now() => Some(until),
                    _ => {
                        if (s.in_flight as f64) < s.limit.floor() {
                            s.in_flight += 1;
                            return Permit { limiter: self };
                        }
                        None
                    }
                }
            };
            match pause {
                Some(until) => tokio::time::sleep_until(until).await,
                None => notified.await,
            }
        }
    }

    /// A request succeeded: grow slowly back towards the maximum.
    pub fn on_success(&self) {
        let grew = {
            let mut s = self.lock();
            let before = s.limit.floor();
            s.limit = (s.limit + 1.0 / s.limit).min(self.max);
            s.limit.floor() > before
        };
        if grew {
            self.notify.notify_waiters();
        }
    }

    /// The server said "too many requests": halve the limit, and pause everyone for the wait it
    /// asked for.
    pub fn on_rate_limit(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.lock();
        if s.last_cut
            .is_none_or(|t| now.duration_since(t) >= CUT_INTERVAL)
        {
            s.limit = (s.limit / 2.0).floor().max(1.0);
            s.last_cut = Some(now);
            tracing::debug!(limit = s.limit, "rate limited: concurrency lowered");
        }
        if let Some(wait) = retry_after {
            let until = now + wait;
            s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// The current number of slots.
    pub fn limit(&self) -> u32 {
        self.lock().limit.floor() as u32
    }

    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_limit() {
        let limiter = Arc::new(AdaptiveLimiter::new(3));
        let peak = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (limiter, peak, now) = (limiter.clone(), peak.clone(), now.clone());
                tokio::spawn(async move {
                    let _p = limiter.acquire().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn halves_on_rate_limit_once_per_interval_and_recovers_slowly() {
        let l = AdaptiveLimiter::new(8);
        l.on_rate_limit(None);
        assert_eq!(l.limit(), 4);
        l.on_rate_limit(None); // same burst: ignored
        assert_eq!(l.limit(), 4);
        tokio::time::advance(CUT_INTERVAL).await;
        l.on_rate_limit(None);
        assert_eq!(l.limit(), 2);
        tokio::time::advance(CUT_INTERVAL).await;
        l.on_rate_limit(None);
        tokio::time::advance(CUT_INTERVAL).await;
        l.on_rate_limit(None);
        assert_eq!(l.limit(), 1, "never below one");
        // Additive increase: about `limit` successes per extra slot.
        l.on_success(); // 1 -> 2
        assert_eq!(l.limit(), 2);
        l.on_success(); // 2.5
        l.on_success(); // 2.9
        assert_eq!(l.limit(), 2);
        l.on_success(); // 3.24
        assert_eq!(l.limit(), 3);
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.limit(), 8, "never above the configured maximum");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_caller() {
        let l = AdaptiveLimiter::new(4);
        l.on_rate_limit(Some(Duration::from_secs(2)));
        let start = Instant::now();
        let _p = l.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_a_slot_frees() {
        let l = Arc::new(AdaptiveLimiter::new(1));
        let first = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let _p = l2.acquire().await;
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
