//! [`Deadline`]: a point in time computed from an optional timeout with checked arithmetic.
//!
//! Every bounded wait in poolrun (future waits, `map` and `as_completed` deadlines,
//! `shutdown_timeout`, task timeouts, lock acquisition, reaping) goes through this type, so
//! a timeout too large for `Instant` (`Duration::MAX`, `--timeout 1e19`) means "no deadline"
//! instead of an overflow panic.

use std::time::{Duration, Instant};

/// A deadline, or none (`Deadline::NEVER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline: waits bounded by it never end on their own.
    pub const NEVER: Deadline = Deadline(None);

    /// `timeout` from now; `None`, or a timeout too large for `Instant`, is [`NEVER`](Self::NEVER).
    pub fn after(timeout: Option<Duration>) -> Deadline {
        Deadline::after_from(Instant::now(), timeout)
    }

    /// `timeout` from `start` (checked: too large is [`NEVER`](Self::NEVER)).
    pub fn after_from(start: Instant, timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| start.checked_add(t)))
    }

    /// The instant, if there is one.
    pub fn instant(self) -> Option<Instant> {
        self.0
    }

    /// Time left (`None`: no deadline); zero once passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed (never for [`NEVER`](Self::NEVER)).
    pub fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    /// The next sleep of a polling loop: `slice`, capped by the time left.
    pub fn slice(self, slice: Duration) -> Duration {
        match self.remaining() {
            None => slice,
            Some(r) => r.min(slice),
        }
    }

    /// Wait once on `cond` with `guard`, until this deadline at the latest: `None` if the
    /// deadline had already passed (nothing waited), else the guard back after a wake-up,
    /// a spurious one or the timeout (callers re-check their condition in a loop). A
    /// poisoned lock is taken over (the guarded state stays consistent in poolrun's short
    /// critical sections).
    pub(crate) fn wait_on<'a, T>(
        self,
        cond: &std::sync::Condvar,
        guard: std::sync::MutexGuard<'a, T>,
    ) -> Option<std::sync::MutexGuard<'a, T>> {
        match self.remaining() {
            None => Some(cond.wait(guard).unwrap_or_else(|p| p.into_inner())),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(
                cond.wait_timeout(guard, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0,
            ),
        }
    }

    /// The earlier of two deadlines.
    pub fn min(self, other: Deadline) -> Deadline {
        match (self.0, other.0) {
            (Some(a), Some(b)) => Deadline(Some(a.min(b))),
            (Some(a), None) | (None, Some(a)) => Deadline(Some(a)),
            (None, None) => Deadline::NEVER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_never() {
        assert_eq!(Deadline::after(Some(Duration::MAX)), Deadline::NEVER);
        assert_eq!(Deadline::after(None), Deadline::NEVER);
        assert!(!Deadline::NEVER.passed());
        assert_eq!(Deadline::NEVER.remaining(), None);
        assert_eq!(
            Deadline::NEVER.slice(Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn ordinary_deadlines() {
        let d = Deadline::after(Some(Duration::ZERO));
        assert!(d.passed());
        assert_eq!(d.remaining(), Some(Duration::ZERO));
        let far = Deadline::after(Some(Duration::from_secs(3600)));
        assert!(!far.passed());
        assert_eq!(far.min(d), d);
        assert_eq!(Deadline::NEVER.min(far), far);
        assert!(far.slice(Duration::from_millis(5)) <= Duration::from_millis(5));
    }
}
