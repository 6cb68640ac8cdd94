//! Where a forward pass runs: on a worker of rayon's pool, not on the calling thread.
//!
//! Every fused kernel, packed product and candle op of a forward pass splits its work with rayon.
//! Called from a thread outside the pool (the program's main thread), each of those hundreds of
//! ops per pass injected its tasks into the pool, put the caller to sleep and woke it again at
//! the end: on 2 cores, three threads traded the CPUs, and the scheduler's functions took 14 %
//! of SmolLM2's generation (perf). Run on a worker, an op's first half runs on the caller and
//! only the other half is stolen: generation (40 × 40 tokens, batch 20) went from 11.7–13.2 to
//! 15.6–16.1 prompts/s.

/// `f()` on a worker of rayon's global pool (inline if this thread is one already).
pub(crate) fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_a_pool_worker_and_returns_its_value() {
        assert!(rayon::current_thread_index().is_none(), "the test thread is outside the pool");
        let (index, value) = on_worker(|| (rayon::current_thread_index(), 6 * 7));
        assert!(index.is_some(), "not on a worker");
        assert_eq!(value, 42);
        // From a worker, it runs in place.
        let nested = on_worker(|| {
            let outer = rayon::current_thread_index();
            on_worker(|| rayon::current_thread_index() == outer)
        });
        assert!(nested);
    }
}
