//! `poolrun demo SCENARIO`: runnable scenarios of poolrun's synchronisation primitives, each
//! the same code on a thread pool (`--mode thread`) and on a process pool
//! (`--mode process`), because `poolrun::sync` and `poolrun::shm` handles work in both.
//!
//! - `dialogue`: two parties alternate strictly through one `Condition`, six lines of a
//!   call-and-response; the driver checks the transcript alternates.
//! - `event`: a connector retries until a checker sets an `Event`, giving up after 5 tries.
//! - `deadlock`: two tasks take two locks in opposite orders. Plain, they deadlock (each
//!   gives up after a 2 s timeout, exit 1); with `--lockdep` the inversion is reported and
//!   the demo exits 1 at once; with `--fix order` (same order) or `--fix rlock` (one
//!   re-entrant lock for both accounts) it completes (exit 0).
//! - `callbacks`: submit + `add_done_callback` + `map`, printing which thread/process each
//!   task and each callback ran on.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use poolrun::shm::SharedArray;
use poolrun::sync::{lockdep, Condition, Event, Lock, RLock, SyncError};
use poolrun::{Executor, Mode, Pool, PoolConfig};
use serde::{Deserialize, Serialize};

/// Which scenario `poolrun demo` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Two parties alternate strictly through one Condition.
    Dialogue,
    /// A connector retries until a checker sets an Event (gives up after 5 tries).
    Event,
    /// Two tasks take two locks in opposite orders (see --lockdep, --fix).
    Deadlock,
    /// submit + add_done_callback + map: where each callback runs.
    Callbacks,
}

/// How `poolrun demo deadlock` avoids the deadlock.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Both accounts behind one re-entrant lock (taken twice, nested).
    Rlock,
    /// Both tasks take the two locks in the same order.
    Order,
}

/// Arguments of `poolrun demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Run the tasks on a thread pool or on a process pool.
    #[arg(long, default_value = "thread")]
    pub mode: Mode,
    /// Turn on lock-order checking (poolrun::sync::lockdep) before the pool starts.
    #[arg(long)]
    pub lockdep: bool,
    /// `deadlock` only: avoid the deadlock.
    #[arg(long, value_enum)]
    pub fix: Option<Fix>,
}

/// Where the calling code runs: "pid N, thread NAME".
fn whoami() -> String {
    let t = std::thread::current();
    format!(
        "pid {}, thread {}",
        std::process::id(),
        t.name().unwrap_or("<unnamed>")
    )
}

const LONG: Option<Duration> = Some(Duration::from_secs(10));

/// Run `poolrun demo`; returns the exit code (0 success, 1 the scenario failed or found
/// a problem, 2 the pool could not start).
pub fn run(args: &DemoArgs) -> i32 {
    if args.fix.is_some() && args.scenario != Scenario::Deadlock {
        eprintln!("poolrun: demo: --fix applies to the `deadlock` scenario only");
        return 2;
    }
    if args.lockdep {
        // Before the pool forks, so process workers inherit it.
        lockdep::enable();
    }
    let pool = match Pool::new(args.mode, PoolConfig::new().workers(2)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("poolrun: demo: cannot start the {} pool: {e}", args.mode);
            return 2;
        }
    };
    println!(
        "demo {:?} on a {} pool of 2 workers (driver: {})",
        args.scenario,
        args.mode,
        whoami()
    );
    let code = match args.scenario {
        Scenario::Dialogue => dialogue(&pool),
        Scenario::Event => event(&pool),
        Scenario::Deadlock => deadlock(&pool, args.fix),
        Scenario::Callbacks => callbacks(&pool),
    };
    pool.shutdown(true, true);
    code
}

fn fail(what: &str, e: impl std::fmt::Display) -> i32 {
    eprintln!("poolrun: demo: {what}: {e}");
    1
}

// ---- dialogue ------------------------------------------------------------------------

const LINES: [&str; 6] = [
    "Knock, knock.",
    "Who's there?",
    "Lock.",
    "Lock who?",
    "Lock-step: I speak, then I wait for you.",
    "And I wait for you, then I speak.",
];

#[derive(Serialize, Deserialize)]
struct Party {
    who: u32,
    cond: Condition,
    /// [0] = number of the next line; [1..7] = who said each line.
    turn: SharedArray<u32>,
}

fn party(p: Party) -> Result<(), String> {
    let name = if p.who == 0 { "A" } else { "B" };
    for line in (p.who as usize..LINES.len()).step_by(2) {
        let mut g = p.cond.acquire(LONG).map_err(|e| e.to_string())?;
        let my_turn = p
            .cond
            .wait_for(&mut g, || p.turn.get(0) as usize == line, LONG)
            .map_err(|e| e.to_string())?;
        if !my_turn {
            return Err(format!("{name}: no turn for line {} within 10 s", line + 1));
        }
        println!("  {}. {name}: {:<42} [{}]", line + 1, LINES[line], whoami());
        p.turn.set(1 + line, p.who + 1);
        p.turn.set(0, line as u32 + 1);
        p.cond.notify_all();
    }
    Ok(())
}

fn dialogue(pool: &Pool) -> i32 {
    let (cond, turn) = match (Condition::new(), SharedArray::<u32>::new(1 + LINES.len())) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) => return fail("Condition::new", e),
        (_, Err(e)) => return fail("SharedArray::new", e),
    };
    // B first, to show that the order of arrival does not matter.
    let futs: Vec<_> = [1, 0]
        .into_iter()
        .map(|who| {
            pool.submit(
                party,
                Party {
                    who,
                    cond: cond.clone(),
                    turn: turn.clone(),
                },
            )
        })
        .collect();
    let mut code = 0;
    for f in futs {
        match f.result() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => code = fail("party", e),
            Err(e) => code = fail("task", e),
        }
    }
    let said: Vec<u32> = (1..=LINES.len()).map(|i| turn.get(i)).collect();
    let strict = said
        .iter()
        .enumerate()
        .all(|(i, &w)| w == (i % 2) as u32 + 1);
    if code == 0 && strict {
        println!("ok: the parties alternated strictly ({said:?})");
        0
    } else {
        fail("the dialogue did not alternate", format!("{said:?}"))
    }
}

// ---- event ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Ping {
    ready: Event,
    tries: u32,
    retry_ms: u64,
}

fn connector(p: Ping) -> Result<u32, String> {
    for t in 1..=p.tries {
        println!(
            "  connector: try {t}: waiting up to {} ms for the service [{}]",
            p.retry_ms,
            whoami()
        );
        if p.ready.wait(Some(Duration::from_millis(p.retry_ms))) {
            println!("  connector: connected on try {t}");
            return Ok(t);
        }
    }
    println!("  connector: giving up after {} tries", p.tries);
    Err(format!("service not ready after {} tries", p.tries))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sets the event once the service is "up": at `up_at_ms` (epoch ms, fixed by the driver,
/// so a worker that starts late does not shift it).
fn checker((ready, up_at_ms): (Event, u64)) -> String {
    let wait = up_at_ms.saturating_sub(epoch_ms());
    println!(
        "  checker: checking the service for {wait} ms [{}]",
        whoami()
    );
    std::thread::sleep(Duration::from_millis(wait));
    println!("  checker: service is up: setting the event");
    ready.set();
    whoami()
}

fn event(pool: &Pool) -> i32 {
    let ready = match Event::new() {
        Ok(e) => e,
        Err(e) => return fail("Event::new", e),
    };
    let up_at = epoch_ms() + 250;
    let c = pool.submit(
        connector,
        Ping {
            ready: ready.clone(),
            tries: 5,
            retry_ms: 120,
        },
    );
    let k = pool.submit(checker, (ready, up_at));
    let checked = k.result();
    match (c.result(), checked) {
        (Ok(Ok(t)), Ok(_)) => {
            println!("ok: connected on try {t} of 5");
            0
        }
        (Ok(Err(e)), _) => fail("connector", e),
        (Err(e), _) | (_, Err(e)) => fail("task", e),
    }
}

// ---- deadlock ------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Clone)]
enum Accounts {
    /// One lock per account.
    Two(Lock, Lock),
    /// One re-entrant lock for both.
    One(RLock),
}

#[derive(Serialize, Deserialize)]
struct Transfer {
    task: u32,
    accounts: Accounts,
    /// Take account A's lock first?
    a_first: bool,
    balances: SharedArray<i64>,
    amount: i64,
}

fn why(e: SyncError) -> String {
    match e {
        SyncError::LockOrderInversion { .. } => {
            "lockdep: lock order inversion (report on stderr)".into()
        }
        SyncError::Timeout => "timed out after 2 s: deadlock".into(),
        e => e.to_string(),
    }
}

fn transfer(t: Transfer) -> Result<String, String> {
    let wait = Some(Duration::from_secs(2));
    let pause = Duration::from_millis(100);
    let (from, to) = if t.a_first { (0, 1) } else { (1, 0) };
    let names = ["A", "B"];
    let say = |s: String| println!("  task {}: {s} [{}]", t.task, whoami());
    match &t.accounts {
        Accounts::Two(a, b) => {
            let (first, second) = if t.a_first { (a, b) } else { (b, a) };
            let _g1 = first.acquire(wait).map_err(why)?;
            say(format!("locked account {}", names[from]));
            std::thread::sleep(pause);
            say(format!("taking account {}...", names[to]));
            let _g2 = second.acquire(wait).map_err(|e| {
                format!(
                    "task {}: holding {}, cannot take {}: {}",
                    t.task,
                    names[from],
                    names[to],
                    why(e)
                )
            })?;
            move_money(&t, from, to);
        }
        Accounts::One(r) => {
            let _g1 = r.acquire(wait).map_err(why)?;
            say(format!("locked account {} (the shared RLock)", names[from]));
            std::thread::sleep(pause);
            let _g2 = r.acquire(wait).map_err(why)?;
            say(format!(
                "locked account {} (same RLock, re-entered)",
                names[to]
            ));
            move_money(&t, from, to);
        }
    }
    Ok(format!(
        "task {}: moved {} from {} to {}",
        t.task, t.amount, names[from], names[to]
    ))
}

fn move_money(t: &Transfer, from: usize, to: usize) {
    t.balances.set(from, t.balances.get(from) - t.amount);
    t.balances.set(to, t.balances.get(to) + t.amount);
}

fn deadlock(pool: &Pool, fix: Option<Fix>) -> i32 {
    let accounts = match fix {
        Some(Fix::Rlock) => RLock::named("accounts A+B").map(Accounts::One),
        _ => Lock::named("account A").and_then(|a| Ok(Accounts::Two(a, Lock::named("account B")?))),
    };
    let accounts = match accounts {
        Ok(a) => a,
        Err(e) => return fail("creating the locks", e),
    };
    let balances = match SharedArray::<i64>::new(2) {
        Ok(b) => b,
        Err(e) => return fail("SharedArray::new", e),
    };
    balances.set(0, 100);
    balances.set(1, 100);
    let started = Instant::now();
    let futs: Vec<_> = [(1, true, 30), (2, fix == Some(Fix::Order), 20)]
        .into_iter()
        .map(|(task, a_first, amount)| {
            pool.submit(
                transfer,
                Transfer {
                    task,
                    accounts: accounts.clone(),
                    a_first,
                    balances: balances.clone(),
                    amount,
                },
            )
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    for f in futs {
        let tx = tx.clone();
        f.add_done_callback(move |r| {
            let _ = tx.send(r.clone());
        });
    }
    drop(tx);
    let mut failed = 0;
    let mut caught = false;
    for r in rx.iter() {
        match r {
            Ok(Ok(s)) => println!("  {s}"),
            Ok(Err(e)) => {
                failed += 1;
                caught |= e.contains("lock order inversion");
                println!("  failed: {e}");
            }
            Err(e) => {
                failed += 1;
                println!("  task error: {e}");
            }
        }
    }
    let took = started.elapsed();
    let total = balances.get(0) + balances.get(1);
    println!(
        "balances: A = {}, B = {} (total {total}), after {:.0} ms",
        balances.get(0),
        balances.get(1),
        took.as_secs_f64() * 1e3
    );
    if failed == 0 {
        println!("ok: both transfers completed");
        0
    } else if caught {
        println!("lockdep caught the lock-order inversion before it could deadlock");
        1
    } else {
        println!("DEADLOCK: the tasks waited for each other until a 2 s timeout broke the cycle");
        1
    }
}

// ---- callbacks -----------------------------------------------------------------------

fn square(x: u64) -> (u64, String) {
    std::thread::sleep(Duration::from_millis(10));
    (x * x, whoami())
}

fn callbacks(pool: &Pool) -> i32 {
    let (tx, rx) = mpsc::channel();
    let futs: Vec<_> = (0..4u64).map(|i| pool.submit(square, i)).collect();
    for (i, f) in futs.iter().enumerate() {
        let tx = tx.clone();
        f.add_done_callback(move |r| {
            let line = match r {
                Ok((v, worker)) => format!(
                    "  callback for submit({i}) = {v}: ran in {} (the task ran in {worker})",
                    whoami()
                ),
                Err(e) => format!("  callback for submit({i}): error {e}, ran in {}", whoami()),
            };
            println!("{line}");
            let _ = tx.send(r.is_ok());
        });
    }
    drop(tx);
    let ok = rx.iter().filter(|&ok| ok).count();
    // A callback added to a finished future runs at once, in the caller's thread.
    if let Some(f) = futs.first() {
        f.add_done_callback(|_| println!("  late callback on a done future: ran in {}", whoami()));
    }
    let mut code = if ok == futs.len() { 0 } else { 1 };
    println!("map(square, 0..6):");
    for (i, r) in pool.map(square, 0..6u64).enumerate() {
        match r {
            Ok((v, worker)) => println!("  map[{i}] = {v} (ran in {worker})"),
            Err(e) => code = fail("map", e),
        }
    }
    if code == 0 {
        println!("ok: {ok} callbacks ran, map returned in input order");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(scenario: Scenario, mode: Mode, lockdep: bool, fix: Option<Fix>) -> i32 {
        run(&DemoArgs {
            scenario,
            mode,
            lockdep,
            fix,
        })
    }

    #[test]
    fn scenarios_succeed_in_both_modes() {
        for mode in [Mode::Thread, Mode::Process] {
            assert_eq!(demo(Scenario::Dialogue, mode, false, None), 0, "{mode}");
            assert_eq!(demo(Scenario::Event, mode, false, None), 0, "{mode}");
            assert_eq!(demo(Scenario::Callbacks, mode, false, None), 0, "{mode}");
        }
    }

    #[test]
    fn deadlock_is_caught_or_fixed() {
        for mode in [Mode::Thread, Mode::Process] {
            let t0 = Instant::now();
            assert_eq!(demo(Scenario::Deadlock, mode, true, None), 1, "{mode}");
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{mode}: lockdep answers at once"
            );
            assert_eq!(
                demo(Scenario::Deadlock, mode, true, Some(Fix::Order)),
                0,
                "{mode}"
            );
            assert_eq!(
                demo(Scenario::Deadlock, mode, false, Some(Fix::Rlock)),
                0,
                "{mode}"
            );
        }
    }

    #[test]
    fn connector_gives_up_after_5_tries() {
        let ready = Event::new().unwrap();
        let r = connector(Ping {
            ready,
            tries: 5,
            retry_ms: 1,
        });
        assert_eq!(r, Err("service not ready after 5 tries".to_string()));
    }

    #[test]
    fn fix_is_only_for_deadlock() {
        assert_eq!(
            demo(Scenario::Event, Mode::Thread, false, Some(Fix::Order)),
            2
        );
    }
}
