//! Backpressure: [`SubmitGate`], the bound `PoolConfig::max_queued` puts on a pool.
//!
//! The gate counts tasks submitted through `submit` / `try_submit` / `submit_timeout` and not
//! yet finished; it admits at most `workers + max_queued` of them, so when every worker is
//! busy at most `max_queued` wait. A slot is taken before the task is queued and given back
//! by a done-callback when the task ends however it ends (result, error, cancel, kill,
//! shutdown), so a slot is never lost. `map` keeps its own bounded window instead.

use std::sync::{Condvar, Mutex};

use crate::{gil, Deadline, PoolConfig};

/// See the module docs. For pool implementations: build one with [`SubmitGate::for_config`]
/// and return it from `Dispatch::submit_gate`.
#[derive(Debug)]
pub struct SubmitGate {
    limit: usize,
    held: Mutex<usize>,
    freed: Condvar,
}

impl SubmitGate {
    /// The gate for `cfg`, if it sets `max_queued`.
    pub fn for_config(cfg: &PoolConfig) -> Option<SubmitGate> {
        cfg.get_max_queued().map(|q| SubmitGate {
            limit: cfg.get_workers().saturating_add(q).max(1),
            held: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Take a slot, waiting until `deadline`; false if none freed in time. Releases the GIL
    /// while it waits.
    pub fn acquire(&self, deadline: Deadline) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if *held < self.limit {
            *held += 1;
            return true;
        }
        drop(held);
        gil::allow_threads(|| {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if *held < self.limit {
                    *held += 1;
                    return true;
                }
                match deadline.wait_on(&self.freed, held) {
                    Some(next) => held = next,
                    None => return false,
                }
            }
        })
    }

    /// Give a slot back (its task ended).
    pub fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        *held = held.saturating_sub(1);
        drop(held);
        self.freed.notify_one();
    }

    /// Tasks holding a slot now.
    pub fn held(&self) -> usize {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn admits_workers_plus_max_queued_then_waits_for_a_release() {
        let g = SubmitGate::for_config(&PoolConfig::new().workers(2).max_queued(Some(1))).unwrap();
        assert!((0..3).all(|_| g.acquire(Deadline::NEVER)));
        assert!(!g.acquire(Deadline::after(Some(Duration::from_millis(10)))));
        g.release();
        assert!(g.acquire(Deadline::after(Some(Duration::ZERO))));
        assert_eq!(g.held(), 3);
        assert!(SubmitGate::for_config(&PoolConfig::new()).is_none());
    }
}
