//! Batching for the CLI: a million trivial stdin lines should go through at pool speed, so
//! tasks are handed to the pool in chunks (one message per chunk in process mode) when
//! they are short, and one by one when they are not.
//!
//! The rule ([`ChunkRule`]): keep a moving average of how long a task ran inside its worker
//! (each result carries it) and send `TARGET_MS / average` tasks per chunk, between 1 and
//! [`MAX_CHUNK`]. It starts at 1, so the first tasks are never held back, and a chunk is
//! only what is already waiting: the runner never waits for more input to fill one. Each
//! task still has its own future: per-task output, order, exit status, progress and Ctrl-C
//! are exactly as with chunks of one.

/// A chunk should hold about this much work (ms): enough to amortize a message and a
/// wake-up (tens of µs), little enough that work still spreads over every worker.
const TARGET_MS: f64 = 2.0;
/// The most tasks per chunk.
pub(crate) const MAX_CHUNK: usize = 256;
/// Weight of the newest sample in the moving average.
const ALPHA: f64 = 0.05;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRule {
    avg_ms: Option<f64>,
    size: usize,
}

impl ChunkRule {
    pub(crate) fn new() -> Self {
        ChunkRule {
            avg_ms: None,
            size: 1,
        }
    }

    /// Tasks per chunk now.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A task ran `ms` milliseconds in its worker (`None`: it did not run, e.g. cancelled).
    pub(crate) fn observe(&mut self, ms: Option<f64>) {
        let Some(ms) = ms.filter(|m| m.is_finite() && *m >= 0.0) else {
            return;
        };
        let avg = match self.avg_ms {
            None => ms,
            Some(a) => a + ALPHA * (ms - a),
        };
        self.avg_ms = Some(avg);
        let ideal = if avg <= 0.0 {
            MAX_CHUNK as f64
        } else {
            TARGET_MS / avg
        };
        // (a float-to-int `as` saturates; NaN is excluded above)
        self.size = (ideal as usize).clamp(1, MAX_CHUNK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_tasks_grow_chunks_to_the_cap_and_slow_ones_stay_single() {
        let mut r = ChunkRule::new();
        assert_eq!(r.size(), 1);
        r.observe(Some(0.001));
        assert_eq!(r.size(), MAX_CHUNK);
        let mut r = ChunkRule::new();
        r.observe(Some(0.5));
        assert_eq!(r.size(), 4);
        let mut r = ChunkRule::new();
        for _ in 0..10 {
            r.observe(Some(100.0));
        }
        assert_eq!(r.size(), 1);
    }

    #[test]
    fn the_average_follows_a_change_and_ignores_tasks_that_did_not_run() {
        let mut r = ChunkRule::new();
        r.observe(Some(0.001));
        for _ in 0..200 {
            r.observe(Some(10.0));
        }
        assert_eq!(r.size(), 1, "slow tasks bring chunks back to one");
        r.observe(None);
        r.observe(Some(f64::NAN));
        r.observe(Some(-1.0));
        assert_eq!(r.size(), 1);
        let mut r = ChunkRule::new();
        r.observe(Some(0.0));
        assert_eq!(r.size(), MAX_CHUNK);
    }
}
