//! Automatic chunk sizes for `map` / `map_unordered` when the caller gives no `chunksize`.
//!
//! ## The rule
//! Each chunk travels as one message and runs on one worker, so chunks should be large
//! enough that the per-message cost (a wake-up, a send: tens of microseconds in process mode)
//! is small against the work, and small enough that every worker gets a share and the tail
//! of the input does not run on one worker while the others idle. Like joblib's automatic
//! batch size, the size is found by measurement, not guessed:
//!
//! 1. Start at 1 item per chunk.
//! 2. Each time the map tops its window up, estimate one item's cost from the items the
//!    caller consumed since the last estimate: `cost = elapsed × workers / consumed`. It
//!    includes the per-item overhead, which is exactly what batching amortizes.
//! 3. Aim for chunks of [`TARGET`] of one worker's time: `size = TARGET / cost`, growing at
//!    most ×8 per estimate (the estimate improves as chunks grow), shrinking at once (long
//!    items go back to 1 per chunk), never above [`MAX`].
//! 4. Spread: when the iterator reports how many inputs remain (`size_hint`), no chunk takes
//!    more than a quarter of one worker's share of them (`remaining / (4 × workers)`), so
//!    short inputs and the tail of long ones still reach every worker.
//!
//! The estimate runs on the consumer's clock: if the consumer is slower than the pool, the
//! cost looks higher and chunks stay smaller (harmless: the consumer is the bottleneck).

use std::time::{Duration, Instant};

/// One chunk should take about this much of one worker's time.
pub(crate) const TARGET: Duration = Duration::from_millis(2);
/// The largest automatic chunk (bounds the inputs held in flight: window × chunk).
pub(crate) const MAX: usize = 1024;
/// Growth per estimate is at most this factor.
const GROWTH: usize = 8;

/// The state of the rule for one map (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct AutoChunk {
    workers: usize,
    size: usize,
    mark: Option<(Instant, u64)>,
}

impl AutoChunk {
    pub(crate) fn new(workers: usize) -> Self {
        AutoChunk {
            workers: workers.max(1),
            size: 1,
            mark: None,
        }
    }

    /// The chunk size to use now, given how many items the caller has consumed in all and
    /// (when known) how many inputs remain.
    pub(crate) fn next_size(
        &mut self,
        consumed: u64,
        now: Instant,
        remaining: Option<usize>,
    ) -> usize {
        match self.mark {
            None => self.mark = Some((now, consumed)),
            Some((t0, n0)) => {
                let dn = consumed.saturating_sub(n0);
                let dt = now.saturating_duration_since(t0);
                if dn > 0 {
                    self.size = self.estimate(dt, dn);
                    self.mark = Some((now, consumed));
                }
            }
        }
        self.spread(remaining)
    }

    /// Step 3 of the rule.
    fn estimate(&self, dt: Duration, dn: u64) -> usize {
        let workers = u128::try_from(self.workers).unwrap_or(u128::MAX);
        // cost per item (ns), at least 1 ns so the division below is defined
        let cost = (dt.as_nanos().saturating_mul(workers) / u128::from(dn)).max(1);
        let ideal = TARGET.as_nanos() / cost;
        let ideal = usize::try_from(ideal).unwrap_or(usize::MAX);
        ideal.clamp(1, self.size.saturating_mul(GROWTH).min(MAX))
    }

    /// Step 4 of the rule.
    fn spread(&self, remaining: Option<usize>) -> usize {
        match remaining {
            Some(r) if r > 0 => {
                let share = (r / self.workers.saturating_mul(4)).max(1);
                self.size.min(share)
            }
            _ => self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive the rule with items that cost `per_item` of one worker's time each, consumed
    /// `per_step` at a time; returns the sizes chosen.
    fn drive(
        workers: usize,
        per_item: Duration,
        steps: usize,
        remaining: Option<usize>,
    ) -> Vec<usize> {
        let mut a = AutoChunk::new(workers);
        let mut t = Instant::now();
        let mut consumed = 0u64;
        let mut sizes = vec![a.next_size(consumed, t, remaining)];
        for _ in 0..steps {
            let n = 64 * *sizes.last().unwrap() as u64;
            consumed += n;
            // wall time for n items on `workers` workers
            t += per_item * u32::try_from(n).unwrap() / u32::try_from(workers).unwrap();
            sizes.push(a.next_size(consumed, t, remaining));
        }
        sizes
    }

    #[test]
    fn tiny_items_grow_to_the_cap_by_at_most_8x_per_step() {
        let s = drive(2, Duration::from_nanos(500), 6, None);
        assert_eq!(s, vec![1, 8, 64, 512, 1024, 1024, 1024]);
    }

    #[test]
    fn items_of_a_tenth_of_the_target_settle_at_ten_per_chunk() {
        let s = drive(4, TARGET / 10, 5, None);
        assert_eq!(s, vec![1, 8, 10, 10, 10, 10]);
    }

    #[test]
    fn long_items_stay_one_per_chunk_and_a_slowdown_shrinks_at_once() {
        assert_eq!(drive(2, Duration::from_millis(50), 4, None), vec![1; 5]);
        let mut a = AutoChunk::new(1);
        let t = Instant::now();
        a.next_size(0, t, None);
        assert_eq!(a.next_size(1000, t + Duration::from_micros(100), None), 8);
        // then items get slow: 8 items took 80 ms → 10 ms each → back to 1
        assert_eq!(a.next_size(1008, t + Duration::from_millis(80), None), 1);
    }

    #[test]
    fn a_short_input_is_spread_over_every_worker() {
        // 200 tiny items on 8 workers: at most 200 / 32 = 6 per chunk
        let s = drive(8, Duration::from_nanos(100), 4, Some(200));
        assert!(s.iter().all(|&c| c <= 6), "{s:?}");
        assert_eq!(*s.last().unwrap(), 6);
        // the last few items go one by one
        let mut a = AutoChunk::new(8);
        a.size = 512;
        assert_eq!(a.spread(Some(20)), 1);
        assert_eq!(a.spread(None), 512);
    }

    #[test]
    fn no_new_consumption_keeps_the_size_and_time_cannot_go_backwards() {
        let mut a = AutoChunk::new(2);
        let t = Instant::now();
        a.next_size(0, t, None);
        assert_eq!(a.next_size(0, t + Duration::from_secs(1), None), 1);
        // a clock that did not move: cost clamps to 1 ns, growth to ×8
        assert_eq!(a.next_size(100, t, None), 8);
        assert_eq!(a.next_size(u64::MAX, t, None), 64);
    }
}
