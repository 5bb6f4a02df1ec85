//! An exhaustive-interleaving model checker for small lock-free protocols.
//!
//! A protocol is a few *actors* (a worker, a killer, …), each a state machine whose every
//! [`Actor::step`] performs exactly one atomic operation on shared state — the real
//! operations of the code under test (e.g. `RunWord::begin` is one store, `claim` one
//! compare-exchange). [`explore`] runs every possible order of those steps (each schedule
//! from a fresh state, replaying a prefix and branching), and calls the caller's check on
//! every final state. Steps run one at a time on one thread, so this checks the protocol
//! under sequential consistency — which is what the protocols claim (all their accesses
//! are `SeqCst`). A schedule in which no actor can move but some are not finished is a
//! deadlock and fails the check.
//!
//! loom would also explore weaker memory orders, but needs the code under test rebuilt
//! against its atomics; for protocols of a handful of `SeqCst` steps, exhaustive schedules
//! are the same proof, run with every `cargo test`.

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Performed one action; more follow.
    Ran,
    /// Performed its last action.
    Finished,
    /// Could not move now (waiting for another actor); did nothing.
    Blocked,
}

/// One participant of a protocol.
pub trait Actor<S> {
    /// Perform the next single atomic action on `shared` (or report [`Step::Blocked`]
    /// without touching anything).
    fn step(&mut self, shared: &S) -> Step;
}

/// How much [`explore`] looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explored {
    /// Complete schedules checked.
    pub schedules: usize,
    /// The longest schedule, in steps.
    pub longest: usize,
}

type Built<S> = (S, Vec<Box<dyn Actor<S>>>);

/// Replay `prefix` on a fresh build; returns the state, the actors and which finished.
fn replay<S>(
    build: &dyn Fn() -> Built<S>,
    prefix: &[usize],
) -> (S, Vec<Box<dyn Actor<S>>>, Vec<bool>) {
    let (shared, mut actors) = build();
    let mut finished = vec![false; actors.len()];
    for &i in prefix {
        match actors[i].step(&shared) {
            Step::Ran => {}
            Step::Finished => finished[i] = true,
            Step::Blocked => {
                panic!("model is not deterministic: actor {i} blocked while replaying {prefix:?}")
            }
        }
    }
    (shared, actors, finished)
}

/// Run every interleaving of the actors `build` makes, calling `check` on each final state
/// with the schedule (actor indices in step order). Panics on a deadlock, or on more than
/// `max_schedules` schedules (a model too big to be exhaustive).
pub fn explore<S>(
    build: impl Fn() -> Built<S>,
    check: impl Fn(&S, &[usize]),
    max_schedules: usize,
) -> Explored {
    let mut stats = Explored {
        schedules: 0,
        longest: 0,
    };
    let mut stack: Vec<Vec<usize>> = vec![Vec::new()];
    while let Some(prefix) = stack.pop() {
        let (shared, _, finished) = replay(&build, &prefix);
        let mut enabled = Vec::new();
        for (i, done) in finished.iter().enumerate() {
            if *done {
                continue;
            }
            // Would actor `i` move here? Try it on a fresh replay (a step has effects).
            let (s2, mut a2, _) = replay(&build, &prefix);
            if a2[i].step(&s2) != Step::Blocked {
                enabled.push(i);
            }
        }
        if enabled.is_empty() {
            assert!(
                finished.iter().all(|f| *f),
                "deadlock: no actor can move after schedule {prefix:?} (finished: {finished:?})"
            );
            check(&shared, &prefix);
            stats.schedules += 1;
            stats.longest = stats.longest.max(prefix.len());
            assert!(
                stats.schedules <= max_schedules,
                "more than {max_schedules} schedules: the model is too big"
            );
            continue;
        }
        for i in enabled.into_iter().rev() {
            let mut next = prefix.clone();
            next.push(i);
            stack.push(next);
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Two actors each incrementing a shared counter non-atomically (load, then store):
    /// the checker must find the lost update.
    struct Inc {
        pc: u8,
        seen: u32,
    }
    impl Actor<Cell<u32>> for Inc {
        fn step(&mut self, c: &Cell<u32>) -> Step {
            match self.pc {
                0 => {
                    self.seen = c.get();
                    self.pc = 1;
                    Step::Ran
                }
                _ => {
                    c.set(self.seen + 1);
                    Step::Finished
                }
            }
        }
    }

    fn two_incs() -> Built<Cell<u32>> {
        (
            Cell::new(0),
            vec![
                Box::new(Inc { pc: 0, seen: 0 }),
                Box::new(Inc { pc: 0, seen: 0 }),
            ],
        )
    }

    #[test]
    fn finds_every_schedule() {
        let finals = std::cell::RefCell::new(Vec::new());
        let e = explore(two_incs, |c, _| finals.borrow_mut().push(c.get()), 100);
        assert_eq!(e.schedules, 6, "4 steps, 2 per actor: C(4,2) orders");
        assert!(finals.borrow().contains(&1), "the lost update is found");
        assert!(finals.borrow().contains(&2));
    }

    struct Waiter;
    impl Actor<Cell<u32>> for Waiter {
        fn step(&mut self, c: &Cell<u32>) -> Step {
            if c.get() == 0 {
                Step::Blocked
            } else {
                Step::Finished
            }
        }
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn reports_deadlocks() {
        explore(
            || (Cell::new(0u32), vec![Box::new(Waiter) as Box<dyn Actor<_>>]),
            |_, _| {},
            10,
        );
    }
}
