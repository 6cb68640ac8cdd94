//! `x · Wᵀ` at prefill sizes (hundreds of rows): candle's matmul against direct gemm calls with
//! several thread splits, on Qwen2.5-Coder-0.5B's linear shapes, f32, alternating candidates
//! round by round (best of ROUNDS), GFLOP/s. `gemm_wt` is what `linear` runs beyond the small
//! kernel's rows; `wt-*` read a transposed copy of `W` (`[k, n]`, no packing of `W` by gemm), a
//! layout scalpel does not keep; `1thread` is one gemm call without threads.
//!
//! `cargo run --release --example bench_prefill_matmul -- [ROWS,ROWS,..] [ROUNDS]`

use candle_core::{Device, Tensor};
use scalpel::model::small_matmul::gemm_wt;
use std::time::Instant;

/// `y = x · Wᵀ` with one gemm call over all of `y`'s rows, `par` its parallelism.
fn gemm_call(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize, par: gemm::Parallelism) {
    // SAFETY: x is [m, k], w is [n, k], y is [m, n], all row-major (checked by the slicing).
    let (x, w, y) = (&x[..m * k], &w[..n * k], &mut y[..m * n]);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Rows split in `parts` blocks, one single-threaded gemm each, on rayon.
fn split_rows(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize, parts: usize) {
    use rayon::prelude::*;
    let per = m.div_ceil(parts);
    y.par_chunks_mut(per * n).zip(x.par_chunks(per * k)).for_each(|(y, x)| {
        let rows = x.len() / k;
        gemm_call(x, w, y, rows, k, n, gemm::Parallelism::None);
    });
}

/// `y = x · W` for `W` stored transposed (`wt` `[k, n]`), its columns split in `parts` blocks,
/// one single-threaded gemm each (`parts` 0: one gemm on rayon).
fn transposed(x: &[f32], wt: &[f32], y: &mut [f32], m: usize, k: usize, n: usize, parts: usize) {
    if parts == 0 {
        // SAFETY: x [m, k], wt [k, n], y [m, n], row-major.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                y.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                wt.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        }
        return;
    }
    let per = n.div_ceil(parts).next_multiple_of(16);
    let yp = y.as_mut_ptr() as usize;
    rayon::scope(|s| {
        for j0 in (0..n).step_by(per) {
            let cols = per.min(n - j0);
            s.spawn(move |_| unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    (yp as *mut f32).add(j0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    wt.as_ptr().add(j0),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            });
        }
    });
}

/// Columns of `y` (rows of `W`) split in `parts` blocks, one single-threaded gemm each.
fn split_cols(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize, parts: usize) {
    let per = n.div_ceil(parts).next_multiple_of(16);
    let yp = y.as_mut_ptr() as usize;
    rayon::scope(|s| {
        for j0 in (0..n).step_by(per) {
            let cols = per.min(n - j0);
            s.spawn(move |_| unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    (yp as *mut f32).add(j0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr().add(j0 * k),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            });
        }
    });
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: Vec<usize> = match args.first() {
        Some(list) => list.split(',').map(|r| r.parse()).collect::<Result<_, _>>()?,
        None => vec![128, 256, 512, 800, 2000],
    };
    let rounds: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let threads = rayon::current_num_threads();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{threads} rayon threads; load {}; GFLOP/s, best of {rounds} alternating rounds", load.trim());
    let shapes = [("qkv", 896, 1152), ("o_proj", 896, 896), ("gate_up", 896, 9728), ("down", 4864, 896)];
    for (name, k, n) in shapes {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let wt = w.t()?;
        let wtv = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        for &m in &rows {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let mut y = vec![0f32; m * n];
            let flop = 2.0 * (m * k * n) as f64 * 1e-9;
            let names = [
                "candle",
                "gemm-rayon",
                "split-rows-2",
                "split-cols-2",
                "split-cols-4",
                "wt-rayon",
                "wt-cols-2",
                "gemm_wt",
                "1thread",
            ];
            let mut best = [f64::INFINITY; 9];
            for _ in 0..rounds {
                for (c, b) in best.iter_mut().enumerate() {
                    let t = Instant::now();
                    match c {
                        0 => drop(std::hint::black_box(x.matmul(&wt)?)),
                        1 => gemm_call(&xv, &wv, &mut y, m, k, n, gemm::Parallelism::Rayon(threads)),
                        2 => split_rows(&xv, &wv, &mut y, m, k, n, threads),
                        3 => split_cols(&xv, &wv, &mut y, m, k, n, threads),
                        4 => split_cols(&xv, &wv, &mut y, m, k, n, 2 * threads),
                        5 => transposed(&xv, &wtv, &mut y, m, k, n, 0),
                        6 => transposed(&xv, &wtv, &mut y, m, k, n, threads),
                        7 => drop(std::hint::black_box(gemm_wt(&xv, &wv, None, m, k, n))),
                        _ => gemm_call(&xv, &wv, &mut y, m, k, n, gemm::Parallelism::None),
                    }
                    std::hint::black_box(&y);
                    *b = b.min(t.elapsed().as_secs_f64());
                }
            }
            let cols: Vec<String> = names.iter().zip(best).map(|(n, b)| format!("{n} {:5.1}", flop / b)).collect();
            println!("{name:8} k {k:5} n {n:5} m {m:5}: {}", cols.join("  "));
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load at the end {}", load.trim());
    Ok(())
}
