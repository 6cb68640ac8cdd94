//! `y = x · Wᵀ (+ b)` for an f32 `W` kept in panels of 16 output columns (AVX-512), in place of
//! its row-major copy.
//!
//! Row-major `W` suits dot products along `k`, which for a few rows of `x` (a decode step of a
//! batch) reload `x` for every 4 rows of `W` and reduce each sum across the vector lanes at the
//! end, which leaves a decode step well below the rate at which the weights stream from memory.
//! In panels (`W`'s rows `[16g, 16g + 16)`
//! stored column by column, two panels interleaved per group of 32 outputs: value `(32q + r, p)`
//! in block `(q · k + p) · 2 + r / 16`, lane `r % 16`, 64-byte aligned), a vector load is 16
//! outputs' weights for one `p`; broadcasting `x[i, p]` into it needs no reduction and each
//! weight is loaded once per 10 rows of `x`. 10 rows × 2 panels of accumulators; `x` packed per
//! 10-row block (one cache line per step); `k` in chunks of 128–256 steps, with the
//! accumulators kept in `y` between chunks, so that a group's chunk stays in L1 while every row
//! block of `x` passes it, and rows in passes of at most 3 MB of `x` (so that `x` meets every
//! group from cache): the same kernel serves a capture batch of 800 rows at about gemm's
//! rate. Each output is a sum over `p` in order, whatever the chunking, so a row's result does
//! not depend on the other rows of its batch. A 16-bit matrix is widened while it is packed.
//!
//! x86-64 with AVX-512F only ([`has_avx512f`]); nothing packs elsewhere.

use super::isa::has_avx512f;
use super::packed::PackedWeight;
use super::slices::Columns;
use candle_core::{CpuStorage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Output columns per panel (one AVX-512 vector of f32).
const WIDTH: usize = 16;
/// Panels per group (accumulator columns), stored interleaved: one stream of weights per group.
const NR: usize = 2;
/// Output columns per group.
const GROUP: usize = NR * WIDTH;
/// Rows of `x` per kernel call (accumulator rows): 10 × 2 accumulators, 2 weight vectors.
const MR: usize = 10;
/// `k` per chunk: two panels' chunk is 16 KB.
const KC: usize = 128;
/// The most steps along `k` per chunk: two panels' chunk (32 KB) and a row block's stay in L1.
const MAX_KC: usize = 256;
/// The most bytes of `x` per chunk of `k` beyond `KC` steps (half a core's L2).
const X_CHUNK_BYTES: usize = 1 << 20;
/// The most bytes of packed `x` per pass over the weights (rows beyond it take another pass), so
/// that a long `k`'s `x`, read once per group of 32 outputs, meets every group from cache.
const X_PASS_BYTES: usize = 3 << 20;
/// Steps along `k` between a weight block's prefetch and its use.
const AHEAD: usize = 24;

/// 16 f32 values, 64-byte aligned: one row `p` of one panel.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([f32; WIDTH]);

/// An f32 matrix `[n, k]` in panels, zero past row `n`.
struct Packed {
    k: usize,
    blocks: Vec<Block>,
}

impl Packed {
    /// The row-major `[n, k]` `values` in panels, widened to f32.
    fn new<T: Copy + Into<f32> + Sync>(n: usize, k: usize, values: &[T]) -> Packed {
        let mut blocks = vec![Block([0.0; WIDTH]); n.div_ceil(GROUP) * NR * k];
        if k > 0 {
            blocks.par_chunks_mut(NR * k).zip(values.par_chunks(GROUP * k)).for_each(|(group, rows)| {
                for (r, row) in rows.chunks(k).enumerate() {
                    for (p, &value) in row.iter().enumerate() {
                        group[p * NR + r / WIDTH].0[r % WIDTH] = value.into();
                    }
                }
            });
        }
        Packed { k, blocks }
    }
}

/// Rows `[32 · first, 32 · first + n)` (`first` counts groups of panels) of a panel-packed
/// matrix: a whole matrix or one part of a fused one, sharing its storage.
#[derive(Clone)]
pub struct Panels {
    packed: Arc<Packed>,
    first: usize,
    n: usize,
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Panels({} × {} from group {})", self.n, self.packed.k, self.first)
    }
}

impl Panels {
    /// `w` (`[n, k]` on the CPU: f32, or bf16/f16 widened exactly while packing, so that a
    /// 16-bit checkpoint's matrix needs no f32 row-major copy first) in panels; `None` on a CPU
    /// without AVX-512F ([`has_avx512f`]) or when `w` is anything else.
    pub fn pack(w: &Tensor) -> candle_core::Result<Option<Panels>> {
        if !has_avx512f() || !w.device().is_cpu() || w.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(storage), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
            return Ok(None);
        };
        let packed = match storage {
            CpuStorage::F32(v) => Packed::new(n, k, &v[start..end]),
            CpuStorage::BF16(v) => Packed::new(n, k, &v[start..end]),
            CpuStorage::F16(v) => Packed::new(n, k, &v[start..end]),
            _ => return Ok(None),
        };
        Ok(Some(Panels { packed: Arc::new(packed), first: 0, n }))
    }

    /// Rows `[from, from + n)`, sharing the storage; `None` unless `from` is a multiple of 32
    /// (a group of panels) and the rows are inside.
    pub fn rows(&self, from: usize, n: usize) -> Option<Panels> {
        (from.is_multiple_of(GROUP) && from + n <= self.n).then(|| Panels {
            packed: self.packed.clone(),
            first: self.first + from / GROUP,
            n,
        })
    }

    /// The matrix back in rows, `[n, k]` (for edits).
    pub fn unpack(&self) -> candle_core::Result<Tensor> {
        self.gather(&(0..self.n as u32).collect::<Vec<_>>())
    }

    /// Rows `ids` of the matrix, `[ids.len(), k]` f32: the embedding lookup of a head tied to
    /// the embedding and kept in panels (one copy of the matrix serves both). Rows in order
    /// share their panels' cache lines.
    pub fn gather(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let k = self.packed.k;
        if let Some(&bad) = ids.iter().find(|&&r| r as usize >= self.n) {
            candle_core::bail!("row {bad} is outside a {} × {k} matrix in panels", self.n);
        }
        let mut values = vec![0f32; ids.len() * k];
        if k > 0 {
            values.par_chunks_mut(k).zip(ids.par_iter()).for_each(|(row, &r)| {
                let r = r as usize;
                let group = &self.packed.blocks[(self.first + r / GROUP) * NR * k..][..NR * k];
                let (panel, lane) = ((r % GROUP) / WIDTH, r % WIDTH);
                for (p, value) in row.iter_mut().enumerate() {
                    *value = group[p * NR + panel].0[lane];
                }
            });
        }
        Tensor::from_vec(values, (ids.len(), k), &candle_core::Device::Cpu)
    }

    /// The bytes the panels take (the whole matrix, for any view of it).
    pub fn bytes(&self) -> usize {
        self.packed.blocks.len() * size_of::<Block>()
    }

    /// `(n, k)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.packed.k)
    }

    /// `x · Wᵀ + b` for `x` `[m, k]` row-major and `bias` `[n]`, as `[m, n]` row-major. Panics if
    /// a length does not match.
    pub fn product(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let (n, k) = self.dims();
        assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
        assert!(bias.is_none_or(|b| b.len() == n), "the bias is not [{n}]");
        matmul_wt(x, m, self, bias)
    }
}

/// `x · Wᵀ + b` for a CPU f32 `x` `[m, k]` and `w` in panels `[n, k]`, `b` `[n]` f32.
pub fn linear(x: &Tensor, w: &Panels, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    super::packed::linear(x, w, b)
}

impl PackedWeight for Panels {
    const NAME: &'static str = "panel-matmul";

    fn dims(&self) -> (usize, usize) {
        Panels::dims(self)
    }

    fn product(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        matmul_wt(x, m, self, bias)
    }
}

/// `x · Wᵀ + b`, `x` `[m, k]` row-major, as `[m, n]` (a [`Panels`] exists only where
/// [`has_avx512f`]).
fn matmul_wt(x: &[f32], m: usize, w: &Panels, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (w.n, w.packed.k);
    if m == 0 || n == 0 || k == 0 {
        return match bias {
            Some(b) => b.repeat(m),
            None => vec![0f32; m * n],
        };
    }
    // `x` in blocks of `MR` rows, each row block stored column by column, so that a step along
    // `k` broadcasts from one cache line (rows past `m` are zero).
    // Every value is written (a reused buffer needs no clearing).
    let mut xp = PACKED_X.take();
    xp.resize(m.div_ceil(MR) * k * MR, 0.0);
    xp.truncate(m.div_ceil(MR) * k * MR);
    xp.par_chunks_mut(k * MR).zip(x.par_chunks(MR * k)).for_each(|(block, rows)| {
        let real = rows.len() / k;
        if real < MR {
            block.chunks_mut(MR).for_each(|step| step[real..].fill(0.0));
        }
        for (i, row) in rows.chunks(k).enumerate() {
            for (p, &v) in row.iter().enumerate() {
                block[p * MR + i] = v;
            }
        }
    });
    // Rows per pass: all of them while their packed `x` stays in the last-level cache; in passes
    // otherwise, so that each group's weights meet `x` from cache rather than from memory.
    let pass = (X_PASS_BYTES / (size_of::<f32>() * k.max(1))).max(MR) / MR * MR;
    // Steps along `k` per chunk: at least `KC`, more while that chunk of `x` stays in L2, so
    // that the output (read and written once per chunk) is not the traffic that binds.
    let chunk = (X_CHUNK_BYTES / (size_of::<f32>() * m.min(pass))).clamp(KC, MAX_KC);
    let groups = n.div_ceil(GROUP);
    // Contiguous ranges of groups, a few per thread (each streams its weights once per pass).
    let tasks = (4 * rayon::current_num_threads()).min(groups);
    let per_task = groups.div_ceil(tasks);
    // Written in full by the first chunk of each group (the accumulators' start is the bias or
    // zero), so it is not cleared first: clearing is a visible share of a large product.
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = Columns(y.as_mut_ptr());
    let blocks = &w.packed.blocks[w.first * NR * k..];
    for first_row in (0..m).step_by(pass) {
        let rows = first_row..(first_row + pass).min(m);
        (0..groups.div_ceil(per_task)).into_par_iter().for_each(|task| {
            for g in task * per_task..((task + 1) * per_task).min(groups) {
                let cols = (n - g * GROUP).min(GROUP);
                for k0 in (0..k).step_by(chunk) {
                    let kc = (k - k0).min(chunk);
                    let start = if k0 > 0 {
                        Start::Output
                    } else {
                        bias.map_or(Start::Zero, |b| Start::Bias(b[g * GROUP..].as_ptr()))
                    };
                    for i0 in rows.clone().step_by(MR) {
                        let mr = (rows.end - i0).min(MR);
                        let call = Call {
                            x: xp[(i0 / MR * k + k0) * MR..].as_ptr(),
                            w: blocks[(g * k + k0) * NR..].as_ptr(),
                            kc,
                            y: out.at(i0 * n + g * GROUP),
                            n,
                            cols,
                            start,
                            fetch: i0 == rows.start,
                        };
                        // SAFETY: `Panels::pack` checked AVX-512F; `call` lies inside `x`, the panels
                        // and `y` (rows `i0..i0 + mr`, columns `g·32..g·32 + cols`, this task's
                        // alone).
                        unsafe { kernel::dispatch(mr, &call) };
                    }
                }
            }
        });
    }
    if xp.len() * size_of::<f32>() <= MAX_REUSED_X_BYTES {
        PACKED_X.set(xp);
    }
    // SAFETY: the tasks wrote all `m · n` values (rows `0..m` of every group's columns).
    unsafe { y.set_len(m * n) };
    y
}

/// Largest packed `x` (bytes) kept in a thread's reusable buffer between products.
const MAX_REUSED_X_BYTES: usize = 64 << 20;

thread_local! {
    /// The buffer `x` is packed into, reused so that each product does not map (and page-fault
    /// in) a fresh one.
    static PACKED_X: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What the accumulators start from.
#[derive(Clone, Copy)]
enum Start {
    Zero,
    /// The bias at the call's first column.
    Bias(*const f32),
    /// The output so far (a later chunk of `k`).
    Output,
}

/// One kernel call: a row block of packed `x` from `x` (`MR` values per step along `k`), `kc`
/// steps, a group's panels from `w` (interleaved), output at `y` (row stride `n`), `cols` ≤
/// `GROUP` columns.
struct Call {
    x: *const f32,
    w: *const Block,
    kc: usize,
    y: *mut f32,
    n: usize,
    cols: usize,
    start: Start,
    /// Whether to ask for the weights `AHEAD` steps ahead (the first row block of a chunk).
    fetch: bool,
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{Call, Start, AHEAD, MR, NR, WIDTH};
    use std::arch::x86_64::*;

    /// Run `call` for `mr` ≤ 10 rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `call`'s pointers cover what it reads and writes.
    pub(super) unsafe fn dispatch(mr: usize, call: &Call) {
        debug_assert!(mr <= MR);
        // SAFETY: forwarded from the caller.
        unsafe {
            match mr {
                14 => tile::<14>(call),
                13 => tile::<13>(call),
                12 => tile::<12>(call),
                11 => tile::<11>(call),
                10 => tile::<10>(call),
                9 => tile::<9>(call),
                8 => tile::<8>(call),
                7 => tile::<7>(call),
                6 => tile::<6>(call),
                5 => tile::<5>(call),
                4 => tile::<4>(call),
                3 => tile::<3>(call),
                2 => tile::<2>(call),
                1 => tile::<1>(call),
                _ => unreachable!("at most 14 rows per block"),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(call: &Call) {
        // Lanes of each panel that are real columns.
        let masks: [__mmask16; NR] = std::array::from_fn(|j| {
            let lanes = call.cols.saturating_sub(j * WIDTH).min(WIDTH);
            ((1u32 << lanes) - 1) as __mmask16
        });
        let (x, n, y) = (call.x, call.n, call.y);
        let mut acc = [[_mm512_setzero_ps(); NR]; R];
        // SAFETY: (all blocks) the caller's pointers cover rows `0..R` of `x` and `y` and the
        // group's `kc` rows of blocks; masked lanes are not touched.
        unsafe {
            for (i, row) in acc.iter_mut().enumerate() {
                for (j, a) in row.iter_mut().enumerate() {
                    *a = match call.start {
                        Start::Zero => _mm512_setzero_ps(),
                        Start::Bias(b) => _mm512_maskz_loadu_ps(masks[j], b.add(j * WIDTH)),
                        Start::Output => _mm512_maskz_loadu_ps(masks[j], y.add(i * n + j * WIDTH)),
                    };
                }
            }
            let mut w = call.w;
            for p in 0..call.kc {
                if call.fetch {
                    // Past the chunk's end the address is only prefetched, never read.
                    let ahead = w.wrapping_add(AHEAD * NR).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                }
                let wv: [__m512; NR] = std::array::from_fn(|j| _mm512_load_ps((*w.add(j)).0.as_ptr()));
                for (i, row) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*x.add(p * MR + i));
                    for (a, &wv) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(b, wv, *a);
                    }
                }
                w = w.add(NR);
            }
            for (i, row) in acc.iter().enumerate() {
                for (j, &a) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(y.add(i * n + j * WIDTH), masks[j], a);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::Call;

    /// Never called: [`super::has_avx512f`] is false off x86-64.
    pub(super) unsafe fn dispatch(_: usize, _: &Call) {
        unreachable!("panels are x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed;
    use candle_core::{DType, Device};

    /// `x · Wᵀ + b` in f64.
    fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p])).sum();
                y[i * n + j] = dot + b.map_or(0.0, |b| f64::from(b[j]));
            }
        }
        y
    }

    #[test]
    fn panel_products_match_f64_with_tails_views_and_bias() {
        if !has_avx512f() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let device = Device::Cpu;
        // Tails in every dimension: m past 10-row blocks, n past 16/32 columns, k past 128; a
        // `k` so long that 23 rows take three passes (`X_PASS_BYTES`).
        for (m, k, n) in [(1, 5, 3), (13, 300, 47), (21, 128, 64), (3, 257, 16), (23, 40_000, 40)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &device).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &device).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &device).unwrap();
            let (wv, xv, bv) = (
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
            );
            let panels = Panels::pack(&w).unwrap().expect("f32 packs");
            assert_eq!(panels.unpack().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), wv, "round trip");
            for bias in [None, Some(&b)] {
                let y = packed::linear(&x, &panels, bias).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(&xv, &wv, bias.map(|_| bv.as_slice()), m, k, n);
                for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        // f32 sums of k terms of size ~1: rounding grows with k.
                        (f64::from(got) - want).abs() < 1e-4 * (1.0 + want.abs()) + 1e-7 * k as f64,
                        "{m}x{k}x{n} [{i}]: {got} vs {want}"
                    );
                }
            }
            // A view at a group boundary equals that part of the whole product.
            if n > GROUP {
                let part = panels.rows(GROUP, n - GROUP).unwrap();
                let whole = packed::linear(&x, &panels, Some(&b)).unwrap();
                let got = packed::linear(&x, &part, Some(&b.narrow(0, GROUP, n - GROUP).unwrap())).unwrap();
                assert_eq!(
                    got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    whole.narrow(1, GROUP, n - GROUP).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
                assert!(panels.rows(WIDTH, 4).is_none(), "views start at group boundaries");
            }
        }
    }

    #[test]
    fn sixteen_bit_matrices_pack_as_their_widened_values() {
        if !has_avx512f() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let w = Tensor::randn(0f32, 1.0, (37, 20), &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let narrow = w.to_dtype(dtype).unwrap();
            let widened = narrow.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let packed = Panels::pack(&narrow).unwrap().expect("16-bit packs");
            assert_eq!(packed.unpack().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), widened, "{dtype:?}");
        }
    }

    #[test]
    fn gathered_rows_are_the_matrix_rows_in_any_order_and_out_of_range_rows_are_refused() {
        if !has_avx512f() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let w = Tensor::randn(0f32, 1.0, (70, 9), &Device::Cpu).unwrap();
        let panels = Panels::pack(&w).unwrap().unwrap();
        // Rows across both panels of a group, several groups, repeats, out of order.
        let ids = [69u32, 0, 17, 16, 31, 32, 17, 48];
        let want = w.index_select(&Tensor::new(&ids[..], &Device::Cpu).unwrap(), 0).unwrap();
        let got = panels.gather(&ids).unwrap();
        assert_eq!(got.dims(), &[ids.len(), 9]);
        assert_eq!(
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // A view's rows count from its first group.
        let view = panels.rows(GROUP, 38).unwrap();
        let from_view = view.gather(&[0, 37]).unwrap();
        let want = w.index_select(&Tensor::new(&[32u32, 69], &Device::Cpu).unwrap(), 0).unwrap();
        assert_eq!(
            from_view.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let err = view.gather(&[38]).unwrap_err().to_string();
        assert!(err.contains("row 38 is outside"), "{err}");
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        if !has_avx512f() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let device = Device::Cpu;
        let (k, n) = (300, 70);
        let w = Panels::pack(&Tensor::randn(0f32, 1.0, (n, k), &device).unwrap()).unwrap().unwrap();
        let x = Tensor::randn(0f32, 1.0, (23, k), &device).unwrap();
        let all = packed::linear(&x, &w, None).unwrap();
        for r in [0, 9, 10, 22] {
            let one = packed::linear(&x.narrow(0, r, 1).unwrap(), &w, None).unwrap();
            assert_eq!(
                one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                all.narrow(0, r, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "row {r}"
            );
        }
    }
}
