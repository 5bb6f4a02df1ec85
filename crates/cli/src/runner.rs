//! The run loop: feed inputs to the pool through a bounded window, print results (in input
//! order, or as they complete with `--unordered`), and handle signals.
//!
//! Tasks are submitted in chunks of what is waiting (`batch.rs`: one task per chunk unless
//! tasks are short; each task has its own future and `add_done_callback`, which sends the
//! task's index to this loop) with at most [`window`] chunks' worth submitted and not yet
//! printed. The
//! loop waits on three channels at once — completions, stdin lines, signals — so it never
//! blocks where a Ctrl-C could not reach it (not even inside a long task or a stdin read),
//! and an endless stdin runs in bounded memory.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use crossbeam_channel::{never, select, unbounded, Receiver, TryRecvError};
use poolrun::backend::Dispatch;
use poolrun::slurm::SlurmPool;
use poolrun::{Executor, Pool, TaskError, TaskFuture};

use crate::batch::{ChunkRule, MAX_CHUNK};
use crate::exec;
use crate::input::{spawn_stdin_reader, StdinItem};
use crate::output::{print_block, push_line, Progress, Record};
use crate::plan::{InputSpec, RunPlan};
use crate::registry::{run_one, Req, TaskOutput, Worker};
use crate::signals::{self, SignalWatch};

/// Exit status when stdout is closed (as a shell reports a SIGPIPE death).
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// How many tasks may be submitted and not yet printed: every worker busy with one task and
/// one ahead, plus room for results that finished after a slow task they must be printed
/// behind (input order), so one slow task does not idle the other workers at once.
pub(crate) fn window(workers: usize) -> usize {
    workers.saturating_mul(4).saturating_add(16)
}

/// The window of a Slurm run (see [`window`]).
const SLURM_WINDOW: usize = 10_000;

/// The plan's pool. A Slurm pool defers its array tasks to `main` (which installs the
/// task registry, then calls `poolrun::slurm::run_if_array_task`).
fn start_pool(plan: &RunPlan) -> Result<Pool, poolrun::PoolError> {
    match &plan.slurm {
        Some(slurm) => SlurmPool::new_deferred(plan.config.clone(), slurm.clone()).map(Pool::Slurm),
        None => Pool::new(plan.mode, plan.config.clone()),
    }
}

/// How long the pool may take to stop (kill and reap its workers) before `poolrun` exits
/// anyway.
const STOP_BOUND: Duration = Duration::from_secs(5);

struct InFlight {
    input: String,
    fut: TaskFuture<TaskOutput>,
    done: bool,
}

enum Inputs {
    Args(std::vec::IntoIter<String>),
    Stdin(Receiver<StdinItem>),
    Done,
}

enum RunEnd {
    Finished,
    Signal(i32),
    BrokenPipe,
}

#[derive(Default)]
struct Counts {
    submitted: u64,
    ok: u64,
    failed: u64,
}

fn to_outcome(index: usize, input: String, r: Result<TaskOutput, TaskError>) -> Record {
    match r {
        Ok(out) => Record {
            index,
            input,
            result: out.result,
            worker: Some(out.worker),
            ms: Some(out.ms),
        },
        Err(e) => {
            let worker = match &e {
                TaskError::WorkerDied { pid, .. } => Some(Worker::Pid(*pid)),
                _ => None,
            };
            Record {
                index,
                input,
                result: Err(e.to_string()),
                worker,
                ms: None,
            }
        }
    }
}

/// Drop the pool (daemon: cancels queued work, kills and reaps process workers) on a helper
/// thread, waiting at most `bound`. False if it did not finish in time.
fn stop_pool(pool: Pool, bound: Duration) -> bool {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("poolrun-stop".into())
        .spawn(move || {
            pool.shutdown(false, true);
            drop(pool);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(bound).is_ok(),
        Err(_) => false,
    }
}

/// Run the plan; returns the exit status.
pub(crate) fn run(plan: RunPlan) -> i32 {
    for w in &plan.warnings {
        eprintln!("poolrun: warning: {w}");
    }
    let pool = match start_pool(&plan) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("poolrun: cannot start the {} pool: {e}", plan.mode);
            return 2;
        }
    };
    let slurm = matches!(pool, Pool::Slurm(_));
    // A cluster schedules about once a second: keep many tasks in flight so each job
    // array carries a large share. Elsewhere the window grows with the chunk size.
    let win_for = |chunk: usize| {
        if slurm {
            SLURM_WINDOW
        } else {
            window(pool.workers()).saturating_mul(chunk)
        }
    };
    let mut rule = ChunkRule::new();
    let signals = match SignalWatch::start(exec::kill_all_running) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("poolrun: warning: cannot watch for Ctrl-C: {e}");
            None
        }
    };
    let no_signal = never();
    let sig_rx = signals.as_ref().map_or(&no_signal, |s| s.receiver());

    let (total, mut inputs) = match &plan.inputs {
        InputSpec::Args(a) => (Some(a.len() as u64), Inputs::Args(a.clone().into_iter())),
        InputSpec::Stdin => match spawn_stdin_reader(win_for(MAX_CHUNK)) {
            Ok(rx) if std::io::stdin().is_terminal() => {
                eprintln!("poolrun: reading one task per line from the terminal (Ctrl-D ends)");
                (None, Inputs::Stdin(rx))
            }
            Ok(rx) => (None, Inputs::Stdin(rx)),
            Err(e) => {
                eprintln!("poolrun: {e}");
                stop_pool(pool, STOP_BOUND);
                return 2;
            }
        },
    };
    let progress = Progress::new(plan.progress, total);

    let (done_tx, done_rx) = unbounded::<usize>();
    let mut slots: HashMap<usize, InFlight> = HashMap::new();
    let mut next_print = 0usize;
    let mut counts = Counts::default();
    let mut stdin_error: Option<String> = None;

    let mut submit_batch = pool.batch_submitter(run_one);
    // Submit a chunk of inputs (each with its own future and slot).
    let mut submit = |slots: &mut HashMap<usize, InFlight>,
                      counts: &mut Counts,
                      chunk: Vec<(String, Option<String>)>| {
        let reqs = chunk
            .iter()
            .map(|(input, bad)| Req {
                task: plan.task,
                param: plan.param.clone(),
                input: input.clone(),
                bad_input: bad.clone(),
            })
            .collect();
        let futs = submit_batch(reqs);
        for ((input, _), fut) in chunk.into_iter().zip(futs) {
            let index = counts.submitted as usize;
            let tx = done_tx.clone();
            fut.add_done_callback(move |_| {
                let _ = tx.send(index);
            });
            slots.insert(
                index,
                InFlight {
                    input,
                    fut,
                    done: false,
                },
            );
            counts.submitted += 1;
        }
    };

    // Print every finished slot that may be printed now.
    let emit = |slots: &mut HashMap<usize, InFlight>,
                counts: &mut Counts,
                rule: &mut ChunkRule,
                next_print: &mut usize,
                finished: &[usize]|
     -> Result<(), ()> {
        let mut ready: Vec<usize> = Vec::new();
        if plan.unordered {
            ready.extend_from_slice(finished);
        } else {
            while slots.get(next_print).is_some_and(|s| s.done) {
                ready.push(*next_print);
                *next_print += 1;
            }
        }
        // Everything printable now goes out in one write.
        let mut block = String::new();
        for i in ready {
            let Some(slot) = slots.remove(&i) else {
                continue;
            };
            let outcome = to_outcome(i, slot.input, slot.fut.result());
            rule.observe(outcome.ms);
            if outcome.result.is_ok() {
                counts.ok += 1;
            } else {
                counts.failed += 1;
            }
            progress.finished_one(counts.failed);
            push_line(&mut block, &outcome, plan.format);
        }
        if !block.is_empty() && progress.suspend(|| print_block(&block)).is_err() {
            return Err(());
        }
        Ok(())
    };

    let end = 'run: loop {
        let win = win_for(rule.size());
        // Fill the window from the command-line arguments.
        while slots.len() < win {
            let Inputs::Args(it) = &mut inputs else { break };
            let chunk: Vec<_> = it.by_ref().take(rule.size()).map(|a| (a, None)).collect();
            if chunk.is_empty() {
                inputs = Inputs::Done;
            } else {
                submit(&mut slots, &mut counts, chunk);
            }
        }
        if matches!(inputs, Inputs::Done) && slots.is_empty() {
            break RunEnd::Finished;
        }
        let no_input = never();
        let in_rx = match &inputs {
            Inputs::Stdin(rx) if slots.len() < win => rx,
            _ => &no_input,
        };
        let mut finished = Vec::new();
        select! {
            recv(done_rx) -> m => {
                if let Ok(i) = m {
                    finished.push(i);
                }
                while let Ok(i) = done_rx.try_recv() {
                    finished.push(i);
                }
            }
            recv(sig_rx) -> m => {
                if let Ok(sig) = m {
                    break 'run RunEnd::Signal(sig);
                }
            }
            recv(in_rx) -> m => match m {
                Ok(StdinItem::Line { input, bad }) => {
                    // This line and whatever else is already waiting, up to a chunk.
                    let mut chunk = vec![(input, bad)];
                    while chunk.len() < rule.size() {
                        let Inputs::Stdin(rx) = &inputs else { break };
                        match rx.try_recv() {
                            Ok(StdinItem::Line { input, bad }) => chunk.push((input, bad)),
                            Ok(StdinItem::Error(e)) => {
                                stdin_error = Some(e);
                                inputs = Inputs::Done;
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => inputs = Inputs::Done,
                        }
                    }
                    progress.add_total(chunk.len() as u64);
                    submit(&mut slots, &mut counts, chunk);
                }
                Ok(StdinItem::Error(e)) => {
                    stdin_error = Some(e);
                    inputs = Inputs::Done;
                }
                Err(_) => inputs = Inputs::Done,
            },
            default(Duration::from_millis(500)) => {}
        }
        for &i in &finished {
            if let Some(s) = slots.get_mut(&i) {
                s.done = true;
            }
        }
        if let Pool::Slurm(s) = &pool {
            let (queued, running, _) = s.progress();
            progress.cluster(queued, running, counts.failed);
        }
        if emit(
            &mut slots,
            &mut counts,
            &mut rule,
            &mut next_print,
            &finished,
        )
        .is_err()
        {
            break RunEnd::BrokenPipe;
        }
    };
    progress.clear();
    drop(done_tx);

    match end {
        RunEnd::Finished => {
            drop(signals);
            let stopped = stop_pool(pool, STOP_BOUND);
            if !stopped {
                eprintln!("poolrun: warning: the pool took more than {STOP_BOUND:?} to stop");
            }
            if let Some(e) = stdin_error {
                eprintln!("poolrun: {e}");
                return 2;
            }
            if counts.failed > 0 {
                eprintln!(
                    "poolrun: {} of {} tasks failed",
                    counts.failed, counts.submitted
                );
                return 1;
            }
            0
        }
        RunEnd::BrokenPipe => {
            for s in slots.values() {
                s.fut.cancel();
            }
            drop(slots);
            exec::kill_all_running();
            stop_pool(pool, STOP_BOUND);
            drop(signals);
            EXIT_BROKEN_PIPE
        }
        RunEnd::Signal(sig) => {
            let mut cancelled = 0u64;
            let mut running = 0u64;
            let mut unprinted = 0u64;
            for s in slots.values() {
                if s.done || s.fut.done() {
                    unprinted += 1;
                } else if s.fut.cancel() {
                    cancelled += 1;
                } else {
                    running += 1;
                }
            }
            drop(slots);
            exec::kill_all_running();
            let stopped = stop_pool(pool, STOP_BOUND);
            let finished = counts.ok + counts.failed + unprinted;
            let mut msg = format!(
                "poolrun: interrupted by {}: {finished} task(s) finished ({} ok, {} failed",
                signals::name(sig),
                counts.ok,
                counts.failed
            );
            if unprinted > 0 {
                msg.push_str(&format!(", {unprinted} not printed to keep the order"));
            }
            msg.push_str(&format!(
                "), {running} running stopped, {cancelled} queued cancelled"
            ));
            if !matches!(inputs, Inputs::Done) {
                msg.push_str(", remaining input not read");
            }
            eprintln!("{msg}");
            if !stopped {
                eprintln!("poolrun: warning: the pool took more than {STOP_BOUND:?} to stop");
            }
            drop(signals);
            128 + sig
        }
    }
}
