//! `TaskFuture` as a `std::future::Future`: `.await` it from tokio, async-std or any
//! executor. Waker-based: a pending poll stores the task's waker in the future's state and
//! the completing thread wakes it — no thread blocks per await.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::TaskFuture;
use crate::TaskError;

/// Awaiting a `TaskFuture` yields what [`TaskFuture::result`] returns, without blocking a
/// thread: the pool's completing thread wakes the awaiting task.
///
/// ```
/// # use poolrun_core::backend::task_pair;
/// # let (promise, fut) = task_pair::<u32>(None);
/// # std::thread::spawn(move || promise.complete(Ok(42)));
/// // `fut` came from `pool.submit(f, x)`
/// let r = poll_to_end(async move { fut.await });
/// assert_eq!(r, Ok(42));
/// # fn poll_to_end<F: std::future::Future>(f: F) -> F::Output {
/// #     struct W(std::thread::Thread);
/// #     impl std::task::Wake for W { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #     let w = std::task::Waker::from(std::sync::Arc::new(W(std::thread::current())));
/// #     let mut cx = std::task::Context::from_waker(&w);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// ```
impl<R> Future for TaskFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done() {
            return Poll::Ready(this.take_outcome());
        }
        let mut st = this.state.lock();
        // Re-checked under the lock: `finish` publishes the terminal state and takes the
        // waker under this same lock, so a completion cannot slip between check and store.
        if this.done() {
            drop(st);
            return Poll::Ready(this.take_outcome());
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::task_pair;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pending_then_woken_once_then_ready() {
        let (p, mut f) = task_pair::<u32>(None);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(
            Pin::new(&mut f).poll(&mut cx).is_pending(),
            "a re-poll keeps one waker"
        );
        p.complete(Ok(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(Ok(3)));
    }

    #[test]
    fn a_cancelled_future_is_ready_with_cancelled() {
        let (_p, mut f) = task_pair::<u32>(None);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        assert!(f.cancel());
        assert_eq!(
            Pin::new(&mut f).poll(&mut cx),
            Poll::Ready(Err(TaskError::Cancelled))
        );
    }
}
