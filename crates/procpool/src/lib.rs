//! poolrun's process pool (in progress).
#![forbid(unsafe_code)]
use std::time::Duration;
use poolrun_core::*;

/// A pool of forked worker processes.
#[derive(Debug)]
pub struct ProcessPool { workers: usize }

impl ProcessPool {
    /// Build a pool.
    pub fn new(cfg: PoolConfig) -> Result<ProcessPool, PoolError> {
        cfg.validate()?;
        Err(PoolError::Unsupported("process pool: not yet available".into()))
    }
}

impl Executor for ProcessPool {
    fn submit<A: Payload, R: Payload>(&self, _f: fn(A) -> R, _arg: A) -> TaskFuture<R> { TaskFuture::ready(Err(TaskError::Shutdown)) }
    fn map<A, R, I>(&self, _f: fn(A) -> R, _args: I) -> MapIter<R> where A: Payload, R: Payload, I: IntoIterator<Item = A>, I::IntoIter: Send + 'static { unimplemented!() }
    fn map_unordered<A, R, I>(&self, _f: fn(A) -> R, _args: I) -> MapUnordered<R> where A: Payload, R: Payload, I: IntoIterator<Item = A>, I::IntoIter: Send + 'static { unimplemented!() }
    fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
    fn shutdown_timeout(&self, _c: bool, _t: Duration) -> bool { true }
    fn workers(&self) -> usize { self.workers }
    fn mode(&self) -> Mode { Mode::Process }
}
