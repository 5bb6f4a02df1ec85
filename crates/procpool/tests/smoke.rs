use poolrun_core::{Executor, PoolConfig};
use poolrun_procpool::ProcessPool;

fn square(x: u64) -> u64 { x * x }
fn pid(_: ()) -> u32 { std::process::id() }

#[test]
fn smoke() {
    let pool = ProcessPool::new(PoolConfig::new().workers(2)).unwrap();
    assert_eq!(pool.submit(square, 7).result(), Ok(49));
    let v: Vec<u64> = pool.map(square, 0..100u64).chunksize(7).map(|r| r.unwrap()).collect();
    assert_eq!(v[99], 99*99);
    let p = pool.submit(pid, ()).result().unwrap();
    assert_ne!(p, std::process::id());
    eprintln!("pids {:?}", pool.worker_pids());
}
