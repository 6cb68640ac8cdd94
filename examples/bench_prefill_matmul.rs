//! `x · Wᵀ` at prefill sizes (hundreds of rows): candle's matmul against direct gemm calls with
//! several thread splits, on Qwen2.5-Coder-0.5B's linear shapes, f32, alternating candidates
//! round by round (best of ROUNDS), GFLOP/s. `gemm_wt` is what `linear` runs beyond the small
//! kernel's rows; `wt-*` read a transposed copy of `W` (`[k, n]`, no packing of `W` by gemm), a
//! layout scalpel does not keep; `1thread` is one gemm call without threads.
//!
//! `cargo run --release --example bench_prefill_matmul -- [ROWS,ROWS,..] [ROUNDS]`

use candle_core::{Device, Tensor};
use scalpel::kernels::small_matmul::gemm_wt;
use std::time::Instant;

/// How gemm reads `B` (`[k, n]` in its terms): `W` `[n, k]` as scalpel stores it, or a
/// transposed copy `[k, n]`.
#[derive(Clone, Copy)]
enum Rhs {
    W,
    Transposed,
}

/// The operands of `y = x · B`: `x` `[m, k]` and `b` (`W` or its transpose, per `rhs`).
#[derive(Clone, Copy)]
struct Product<'a> {
    x: &'a [f32],
    b: &'a [f32],
    rhs: Rhs,
    m: usize,
    k: usize,
    n: usize,
}

impl Product<'_> {
    /// `y[.., j0 .. j0 + cols] = x · B[.., j0 .. j0 + cols]` with one gemm call, `y` `[m, n]`
    /// row-major at address `y`.
    fn block(&self, y: usize, j0: usize, cols: usize, par: gemm::Parallelism) {
        let &Product { x, b, rhs, m, k, n } = self;
        assert!(x.len() >= m * k && b.len() >= n * k && j0 + cols <= n);
        let (b0, b_cs, b_rs) = match rhs {
            Rhs::W => (j0 * k, k as isize, 1),
            Rhs::Transposed => (j0, 1, n as isize),
        };
        // SAFETY: the lengths were checked above; `y` is the address of an [m, n] buffer the
        // caller holds, of which this call writes only columns j0 .. j0 + cols.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                (y as *mut f32).add(j0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                b.as_ptr().add(b0),
                b_cs,
                b_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    }

    /// `y = x · B`, one gemm call with parallelism `par`.
    fn call(&self, y: &mut [f32], par: gemm::Parallelism) {
        assert!(y.len() >= self.m * self.n);
        self.block(y.as_mut_ptr() as usize, 0, self.n, par);
    }

    /// Rows split in `parts` blocks, one single-threaded gemm each, on rayon.
    fn split_rows(&self, y: &mut [f32], parts: usize) {
        use rayon::prelude::*;
        let (k, n) = (self.k, self.n);
        let per = self.m.div_ceil(parts);
        y.par_chunks_mut(per * n).zip(self.x.par_chunks(per * k)).for_each(|(y, x)| {
            Product { x, m: x.len() / k, ..*self }.call(y, gemm::Parallelism::None);
        });
    }

    /// Columns of `y` split in `parts` blocks, one single-threaded gemm each, on rayon.
    fn split_cols(&self, y: &mut [f32], parts: usize) {
        assert!(y.len() >= self.m * self.n);
        let n = self.n;
        let per = n.div_ceil(parts).next_multiple_of(16);
        let yp = y.as_mut_ptr() as usize;
        rayon::scope(|s| {
            for j0 in (0..n).step_by(per) {
                s.spawn(move |_| self.block(yp, j0, per.min(n - j0), gemm::Parallelism::None));
            }
        });
    }
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
            let w_rows = Product { x: &xv, b: &wv, rhs: Rhs::W, m, k, n };
            let w_cols = Product { b: &wtv, rhs: Rhs::Transposed, ..w_rows };
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
                        1 => w_rows.call(&mut y, gemm::Parallelism::Rayon(threads)),
                        2 => w_rows.split_rows(&mut y, threads),
                        3 => w_rows.split_cols(&mut y, threads),
                        4 => w_rows.split_cols(&mut y, 2 * threads),
                        5 => w_cols.call(&mut y, gemm::Parallelism::Rayon(threads)),
                        6 => w_cols.split_cols(&mut y, threads),
                        7 => drop(std::hint::black_box(gemm_wt(&xv, &wv, None, m, k, n))),
                        _ => w_rows.call(&mut y, gemm::Parallelism::None),
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
