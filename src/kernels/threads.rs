//! Where a forward pass runs: on a worker of rayon's pool, not on the calling thread.
//!
//! Every fused kernel, packed product and candle op of a forward pass splits its work with rayon.
//! Called from a thread outside the pool (the program's main thread), each of those hundreds of
//! ops per pass injects its tasks into the pool, puts the caller to sleep and wakes it again at
//! the end: one thread more than there are cores trades the CPUs, and the scheduler takes a
//! large share of generation. Run on a worker, an op's first half runs on the caller and only
//! the other half is stolen (docs/benchmarks.md has the measurement).

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
