//! The CPU's f32 FMA peak, measured: each thread runs independent chains of fused multiply-adds
//! on registers (no memory traffic), AVX-512F (16 lanes) or AVX2+FMA (8 lanes) as detected.
//! This is the ceiling no matrix product can pass on this machine; the README's performance
//! section compares gemm's, MKL's and scalpel's forward-pass rates with it.
//!
//! `cargo run --release --example bench_fma_peak -- [THREADS]` (default: 2)

use std::time::Instant;

/// Independent accumulators per thread: enough to cover the FMA latency on two ports.
const CHAINS: usize = 12;
/// FMA rounds per measurement.
const ROUNDS: usize = 50_000_000;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(rounds: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); CHAINS];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(rounds: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); CHAINS];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0f32; 8];
    acc.iter()
        .map(|&v| {
            // SAFETY: `lanes` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            lanes.iter().sum::<f32>()
        })
        .sum()
}

/// A function running `rounds` rounds of [`CHAINS`] FMAs.
type Chains = fn(usize) -> f32;

/// Lanes per FMA and the function that runs the chains.
fn kernel() -> Option<(usize, Chains)> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected just above.
            return Some((16, |r| unsafe { chains_avx512(r) }));
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected just above.
            return Some((8, |r| unsafe { chains_avx2(r) }));
        }
    }
    None
}

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::args().nth(1).map(|t| t.parse()).transpose()?.unwrap_or(2);
    let Some((lanes, run)) = kernel() else {
        anyhow::bail!("no AVX-512F or AVX2+FMA on this CPU: nothing to measure");
    };
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let sums: Vec<f32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || run(ROUNDS))).collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        std::hint::black_box(sums);
        best = best.min(started.elapsed().as_secs_f64());
    }
    let flops = (threads * ROUNDS * CHAINS * lanes * 2) as f64;
    println!("f32 FMA peak, {threads} threads, {lanes} lanes: {:.1} GFLOP/s", flops / best / 1e9);
    Ok(())
}
