//! `y = x · Wᵀ (+ b)` on the CPU for an `x` of few rows (the decode steps of generation), with
//! `W` `[n, k]` read as stored.
//!
//! For such products gemm (candle's CPU matmul) repacks the whole weight matrix on every call,
//! which costs about as much as the product itself. Here each output element is a dot product
//! along `k`, register-blocked over up to 4 rows of `x` and 4 rows of `W` (16 accumulators), so
//! every element of `W` is loaded from memory once per call while `x` stays in cache; rayon tasks
//! take disjoint blocks of `W`'s rows (the output's columns). AVX-512F and AVX2+FMA kernels are
//! chosen at run time; a portable kernel covers every other CPU.
//!
//! `W` may be f32, or bf16/f16 as a checkpoint stores it: 16-bit elements are widened to f32 in
//! registers (exactly: bf16 → f32 is a 16-bit left shift), so the products equal, bit for bit,
//! those of the widened f32 matrix while a decode step reads half the bytes.
//!
//! Each output element's sum runs in an order that depends only on `k` and the kernel (lanes of
//! the vector width along `k`, then a fixed reduction), never on `m` or the thread count, so a
//! row's result does not depend on which other rows share its batch.

use super::isa::Isa;
use super::slices::{f32_slice, Columns};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// The most rows of `x` for which [`linear`] takes this kernel rather than candle's matmul
/// (`examples/bench_small_matmul.rs`: up to here the kernel is faster on every shape, beyond it
/// gemm wins on the wide products).
pub const MAX_ROWS: usize = 40;

/// Narrow products (at most [`NARROW_OUTPUTS`] outputs: attention output, MLP down) take the
/// kernel up to this many rows: gemm parallelises them poorly (at this many rows the kernel is
/// still faster on `o_proj` and `down_proj`).
pub const MAX_ROWS_NARROW: usize = 128;

/// See [`MAX_ROWS_NARROW`].
pub const NARROW_OUTPUTS: usize = 1024;

/// Whether [`linear`] takes this kernel for `m` rows and `n` outputs.
pub fn takes_kernel(m: usize, n: usize) -> bool {
    m <= MAX_ROWS || (n <= NARROW_OUTPUTS && m <= MAX_ROWS_NARROW)
}

/// Bytes of `W` per rayon task: enough work to amortise the task, enough tasks to balance the
/// cores on the smallest products (896 × 896).
const W_BYTES_PER_TASK: usize = 192 * 1024;

/// An element type of `W` the kernel reads, widened exactly to f32.
pub trait Weight: Copy + Send + Sync + 'static {
    /// Which type, for the vector loads.
    const KIND: WeightKind;
    /// Zero (tail padding).
    const ZERO: Self;
    /// The value as f32 (exact).
    fn widen(self) -> f32;
}

/// The element types of [`Weight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// f32.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl Weight for f32 {
    const KIND: WeightKind = WeightKind::F32;
    const ZERO: f32 = 0.0;
    fn widen(self) -> f32 {
        self
    }
}

impl Weight for half::bf16 {
    const KIND: WeightKind = WeightKind::Bf16;
    const ZERO: half::bf16 = half::bf16::ZERO;
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Weight for half::f16 {
    const KIND: WeightKind = WeightKind::F16;
    const ZERO: half::f16 = half::f16::ZERO;
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Whether [`linear`] takes `x` `[m, k]`, `w` `[n, k]` and `b` `[n]`: `x` f32 and `k > 0`,
/// `w` f32 or 16-bit, `b` f32, all on the CPU.
pub fn fits(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    x.dims().last().is_some_and(|&k| k > 0)
        && x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && matches!(w.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && b.is_none_or(|b| b.dtype() == DType::F32 && b.device().is_cpu())
}

/// `x · Wᵀ + b` for `x` `[m, k]`, `w` `[n, k]`, `b` `[n]` that [`fits`]: this module's kernel
/// for few rows ([`takes_kernel`]), else [`gemm_wt`] (a 16-bit `w` widened for the call into a
/// reused buffer).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    x.dims2()?;
    if !fits(x, w, b) {
        candle_core::bail!("small matmul: the inputs do not fit the CPU kernel");
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let op = SmallMatmul { isa: Isa::detect() };
    match b {
        Some(b) => x.apply_op3_no_bwd(&w, &b.contiguous()?, &op),
        None => x.apply_op2_no_bwd(&w, &op),
    }
}

/// Largest widened weight (bytes) kept in a thread's reusable buffer between calls; larger ones
/// (an LM head) get a fresh allocation, so that 16-bit storage keeps its memory saving.
const MAX_REUSED_WIDE_BYTES: usize = 64 << 20;

thread_local! {
    /// The f32 copy of a 16-bit weight for [`gemm_wt`], reused so that each call does not map
    /// (and page-fault in) a fresh buffer of the matrix's size.
    static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` applied to `w` widened to f32 (on every core), in this thread's reused buffer when the
/// matrix is small enough and the buffer is free.
fn with_widened<W: Weight, R>(w: &[W], f: impl FnOnce(&[f32]) -> R) -> R {
    fn widen_into<W: Weight>(out: &mut [f32], w: &[W]) {
        out.par_chunks_mut(1 << 16).zip(w.par_chunks(1 << 16)).for_each(|(o, i)| {
            o.iter_mut().zip(i).for_each(|(o, &i)| *o = i.widen());
        });
    }
    let fresh = |w: &[W]| {
        let mut out = vec![0f32; w.len()];
        widen_into(&mut out, w);
        out
    };
    if w.len() * size_of::<f32>() > MAX_REUSED_WIDE_BYTES {
        return f(&fresh(w));
    }
    WIDE.with(|cell| {
        // Re-entered (a rayon task run by this thread during its own product): a private copy.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return f(&fresh(w));
        };
        if buf.len() < w.len() {
            buf.resize(w.len(), 0.0);
        }
        widen_into(&mut buf[..w.len()], w);
        f(&buf[..w.len()])
    })
}

/// Output columns per gemm task at least (a multiple of the AVX-512 lane count).
const GEMM_MIN_COLUMNS: usize = 64;

/// `y = x · Wᵀ + b` on slices (`x` `[m, k]`, `w` `[n, k]`, `bias` `[n]`, row-major; `y`
/// `[m, n]`) with gemm, for products of many rows. `W`'s rows (the output columns) are split in
/// one block per rayon thread, each a single-threaded gemm call: gemm's own split packs all of
/// `W` on the calling thread first, which left narrow products (attention output, MLP down) at
/// about half the machine's rate. The bias is the gemm's initial `y` (no separate pass). Each
/// output element's sum depends on `k` and gemm's blocking, not on the thread split. Panics if
/// a length does not match.
pub fn gemm_wt(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(w.len(), n * k, "w is not [{n}, {k}]");
    let mut y = match bias {
        Some(b) => {
            assert_eq!(b.len(), n, "the bias is not [{n}]");
            b.repeat(m)
        }
        None => vec![0f32; m * n],
    };
    if m == 0 || n == 0 || k == 0 {
        return y;
    }
    let parts = rayon::current_num_threads().clamp(1, n.div_ceil(GEMM_MIN_COLUMNS));
    let per = n.div_ceil(parts).next_multiple_of(16);
    let out = Columns(y.as_mut_ptr());
    let read_dst = bias.is_some();
    let block = |j0: usize| {
        let cols = per.min(n - j0);
        // SAFETY: x is [m, k] and w [n, k] row-major (checked above), so row j0 + c of w for
        // c < cols is in bounds; y is [m, n] and this block writes only its columns j0..j0+cols.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                out.at(j0),
                1,
                n as isize,
                read_dst,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr().add(j0 * k),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    rayon::scope(|s| {
        for j0 in (per..n).step_by(per) {
            s.spawn(move |_| block(j0));
        }
        block(0);
    });
    y
}

/// `y = x · Wᵀ + b` on slices: `x` `[m, k]`, `w` `[n, k]`, `bias` `[n]`, all row-major; `y` is
/// `[m, n]`; `w`'s elements are widened to f32 exactly. Panics if `isa` is not
/// [`Isa::available`] or a length does not match.
pub fn matmul_wt<W: Weight>(
    isa: Isa,
    x: &[f32],
    w: &[W],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    assert!(isa.available(), "{isa:?} kernels need a CPU that has them");
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(w.len(), n * k, "w is not [{n}, {k}]");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "the bias is not [{n}]");
    }
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    if k == 0 {
        if let Some(b) = bias {
            y.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(b));
        }
        return y;
    }
    match isa {
        Isa::Portable => run::<Portable, W>(x, w, bias, m, k, n, &mut y),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run::<x86::Avx512, W>(x, w, bias, m, k, n, &mut y),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run::<x86::Avx2, W>(x, w, bias, m, k, n, &mut y),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("checked by available()"),
    }
    y
}

/// A kernel: dot products of `MR` rows of `x` with `NR` rows of `W`.
trait Tiles {
    /// Rows of `x` per tile (≤ 4).
    const MR: usize;

    /// `out[i][j] = Σ_p x[i·k + p] · w[j·k + p]` for `x` `[MR, k]` and `w` `[NR, k]`, asking the
    /// CPU to fetch `ahead` (a part of the following rows of `W`) into cache meanwhile, spread
    /// evenly over the steps along `k`.
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set (`Isa::available`).
    unsafe fn tile<W: Weight, const MR: usize, const NR: usize>(
        x: &[f32],
        w: &[W],
        ahead: &[W],
        k: usize,
    ) -> [[f32; NR]; MR];
}

/// Cache lines of a slice that a tile's steps ask the CPU to fetch, a few per step.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Prefetcher {
    base: *const u8,
    lines: usize,
    next: usize,
    steps: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Prefetcher {
    /// For `ahead`, over `steps` steps (at least one).
    fn new<W>(ahead: &[W], steps: usize) -> Prefetcher {
        let lines = (std::mem::size_of_val(ahead)).div_ceil(64);
        Prefetcher { base: ahead.as_ptr().cast(), lines, next: 0, steps: steps.max(1) }
    }

    /// The lines due by the end of step `step` (0-based), each passed to `fetch`; after the last
    /// step every line has been passed.
    #[inline(always)]
    fn step(&mut self, step: usize, fetch: impl FnMut(*const u8)) {
        self.fetch_until(((step + 1) * self.lines / self.steps).min(self.lines), fetch);
    }

    /// Every line not yet passed to `fetch`.
    #[inline(always)]
    fn finish(&mut self, fetch: impl FnMut(*const u8)) {
        self.fetch_until(self.lines, fetch);
    }

    #[inline(always)]
    fn fetch_until(&mut self, due: usize, mut fetch: impl FnMut(*const u8)) {
        while self.next < due {
            // wrapping_add: the address is only prefetched, never dereferenced, and lies inside
            // the slice (the last line may start inside it and end past it).
            fetch(self.base.wrapping_add(self.next * 64));
            self.next += 1;
        }
    }
}

/// W rows per tile.
const NR: usize = 4;

/// Fill `y` `[m, n]`: tasks take blocks of `W`'s rows; within a block, each group of `NR` rows of
/// `W` meets every `x` row while it is in L1, and the tiles ask for the next group from memory
/// in equal parts, so that its transfer overlaps all of this group's arithmetic (asking for it
/// all in the first tile left the other tiles with no transfer in flight: a decode step at 20
/// rows took the time of one pass from memory plus four from cache).
fn run<T: Tiles, W: Weight>(x: &[f32], w: &[W], bias: Option<&[f32]>, m: usize, k: usize, n: usize, y: &mut [f32]) {
    let per_task = (W_BYTES_PER_TASK / (size_of::<W>() * k)).next_multiple_of(NR).max(NR);
    // Each task's columns of each output row, so tasks write disjoint slices.
    let tasks = n.div_ceil(per_task);
    let mut columns: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for row in y.chunks_exact_mut(n) {
        for (task, part) in columns.iter_mut().zip(row.chunks_mut(per_task)) {
            task.push(part);
        }
    }
    columns.into_par_iter().enumerate().for_each(|(task, mut out)| {
        let j0 = task * per_task;
        let width = out[0].len();
        let mut j = 0;
        while j < width {
            let nr = if j + NR <= width { NR } else { 1 };
            let wb = &w[(j0 + j) * k..(j0 + j + nr) * k];
            let next = &w[((j0 + j + nr) * k).min(w.len())..((j0 + j + 2 * nr) * k).min(w.len())];
            let tiles = m.div_ceil(T::MR);
            let mut i = 0;
            while i < m {
                let mr = (m - i).min(T::MR);
                let xb = &x[i * k..(i + mr) * k];
                let t = i / T::MR;
                let next = &next[t * next.len() / tiles..(t + 1) * next.len() / tiles];
                // SAFETY: `matmul_wt` checked that the CPU has `T`'s instruction set.
                let block: [[f32; NR]; 4] = unsafe {
                    match (mr, nr) {
                        (4, NR) => T::tile::<W, 4, NR>(xb, wb, next, k),
                        (3, NR) => widen(T::tile::<W, 3, NR>(xb, wb, next, k)),
                        (2, NR) => widen(T::tile::<W, 2, NR>(xb, wb, next, k)),
                        (1, NR) => widen(T::tile::<W, 1, NR>(xb, wb, next, k)),
                        (4, _) => widen_cols(T::tile::<W, 4, 1>(xb, wb, next, k)),
                        (3, _) => widen(widen_cols(T::tile::<W, 3, 1>(xb, wb, next, k))),
                        (2, _) => widen(widen_cols(T::tile::<W, 2, 1>(xb, wb, next, k))),
                        _ => widen(widen_cols(T::tile::<W, 1, 1>(xb, wb, next, k))),
                    }
                };
                for (r, values) in block.iter().take(mr).enumerate() {
                    let dst = &mut out[i + r][j..j + nr];
                    match bias {
                        Some(b) => {
                            let b = &b[j0 + j..j0 + j + nr];
                            dst.iter_mut().zip(values).zip(b).for_each(|((d, &v), &b)| *d = v + b);
                        }
                        None => dst.copy_from_slice(&values[..nr]),
                    }
                }
                i += mr;
            }
            j += nr;
        }
    });
}

/// A tile of fewer than 4 rows, padded to 4 (the padding is never read).
fn widen<const MR: usize>(t: [[f32; NR]; MR]) -> [[f32; NR]; 4] {
    let mut out = [[0f32; NR]; 4];
    out[..MR].copy_from_slice(&t);
    out
}

/// A one-column tile, padded to `NR` columns (the padding is never read).
fn widen_cols<const MR: usize>(t: [[f32; 1]; MR]) -> [[f32; NR]; MR] {
    let mut out = [[0f32; NR]; MR];
    for (o, v) in out.iter_mut().zip(t) {
        o[0] = v[0];
    }
    out
}

/// The portable kernel: 8 independent partial sums per output element (in arrays the compiler
/// can vectorise), then the remainder of `k`, then the partial sums in a fixed order.
struct Portable;

impl Tiles for Portable {
    const MR: usize = 4;

    unsafe fn tile<W: Weight, const MR: usize, const NR: usize>(
        x: &[f32],
        w: &[W],
        _: &[W],
        k: usize,
    ) -> [[f32; NR]; MR] {
        const L: usize = 8;
        let mut acc = [[[0f32; L]; NR]; MR];
        let full = k / L * L;
        for p in (0..full).step_by(L) {
            for (i, acc) in acc.iter_mut().enumerate() {
                let xv = &x[i * k + p..i * k + p + L];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let wv = &w[j * k + p..j * k + p + L];
                    for l in 0..L {
                        acc[l] += xv[l] * wv[l].widen();
                    }
                }
            }
        }
        let mut out = [[0f32; NR]; MR];
        for i in 0..MR {
            for j in 0..NR {
                let lanes = &mut acc[i][j];
                for p in full..k {
                    lanes[p - full] += x[i * k + p] * w[j * k + p].widen();
                }
                out[i][j] = reduce8(lanes);
            }
        }
        out
    }
}

/// Sum of 8 partial sums, pairwise in the order the AVX2 kernel's reduction uses.
fn reduce8(v: &[f32; 8]) -> f32 {
    let h = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let q = [h[0] + h[2], h[1] + h[3]];
    q[0] + q[1]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Prefetcher, Tiles, Weight, WeightKind};
    use std::arch::x86_64::*;

    /// 16 elements of `W` at `p`, widened to f32.
    ///
    /// # Safety
    /// AVX-512F is available; `p` points at 16 readable elements.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16<W: Weight>(p: *const W) -> __m512 {
        // SAFETY: the caller guarantees 16 readable elements; a `W` of this kind is that type.
        unsafe {
            match W::KIND {
                WeightKind::F32 => _mm512_loadu_ps(p.cast()),
                WeightKind::Bf16 => {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
                }
                WeightKind::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            }
        }
    }

    /// 8 elements of `W` at `p`, widened to f32.
    ///
    /// # Safety
    /// AVX2 and F16C are available; `p` points at 8 readable elements.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8<W: Weight>(p: *const W) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements; a `W` of this kind is that type.
        unsafe {
            match W::KIND {
                WeightKind::F32 => _mm256_loadu_ps(p.cast()),
                WeightKind::Bf16 => {
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))))
                }
                WeightKind::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            }
        }
    }

    /// The `len` (< `N`) elements at `p` followed by zeros, in a local buffer.
    ///
    /// # Safety
    /// `p` points at `len` readable elements.
    #[inline]
    unsafe fn padded<W: Weight, const N: usize>(p: *const W, len: usize) -> [W; N] {
        let mut buf = [W::ZERO; N];
        // SAFETY: the caller guarantees `len` readable elements, and len < N.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), len.min(N)) };
        buf
    }

    /// Ask the CPU to bring the cache line at `line` into L2 (not L1: with 20 rows of `x`
    /// streaming through L1, lines fetched there are evicted before use).
    #[inline(always)]
    fn fetch(line: *const u8) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.cast()) }
    }

    pub(super) struct Avx512;

    impl Tiles for Avx512 {
        const MR: usize = 4;

        unsafe fn tile<W: Weight, const MR: usize, const NR: usize>(
            x: &[f32],
            w: &[W],
            ahead: &[W],
            k: usize,
        ) -> [[f32; NR]; MR] {
            assert!(x.len() >= MR * k && w.len() >= NR * k);
            // SAFETY: the caller guarantees AVX-512F; the lengths were checked above.
            unsafe { tile512::<W, MR, NR>(x.as_ptr(), w.as_ptr(), Prefetcher::new(ahead, k / 16), k) }
        }
    }

    /// # Safety
    /// AVX-512F is available; `x` points at `MR · k` readable f32, `w` at `NR · k` readable
    /// elements (`ahead` is only prefetched).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<W: Weight, const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const W,
        mut ahead: Prefetcher,
        k: usize,
    ) -> [[f32; NR]; MR] {
        let mut acc = [[_mm512_setzero_ps(); NR]; MR];
        let mut wv = [_mm512_setzero_ps(); NR];
        let mut p = 0;
        while p + 16 <= k {
            ahead.step(p / 16, fetch);
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: p + 16 ≤ k, so the 16 lanes lie inside row j of w.
                *v = unsafe { load16(w.add(j * k + p)) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: as above, inside row i of x.
                let xv = unsafe { _mm512_loadu_ps(x.add(i * k + p)) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, wv, *a);
                }
            }
            p += 16;
        }
        ahead.finish(fetch);
        if p < k {
            let mask: __mmask16 = ((1u32 << (k - p)) - 1) as __mmask16;
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: masked-off lanes are not read, and the k − p read ones lie inside row j;
                // 16-bit rows are copied (k − p elements) into a zero-padded buffer.
                *v = unsafe {
                    match W::KIND {
                        WeightKind::F32 => _mm512_maskz_loadu_ps(mask, w.add(j * k + p).cast()),
                        _ => load16(padded::<W, 16>(w.add(j * k + p), k - p).as_ptr()),
                    }
                };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: as above, inside row i of x.
                let xv = unsafe { _mm512_maskz_loadu_ps(mask, x.add(i * k + p)) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(xv, wv, *a);
                }
            }
        }
        let mut out = [[0f32; NR]; MR];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = _mm512_reduce_add_ps(a);
            }
        }
        out
    }

    pub(super) struct Avx2;

    impl Tiles for Avx2 {
        // 3 × 4 accumulators, 4 rows of W and one of x fill the 16 vector registers.
        const MR: usize = 3;

        unsafe fn tile<W: Weight, const MR: usize, const NR: usize>(
            x: &[f32],
            w: &[W],
            ahead: &[W],
            k: usize,
        ) -> [[f32; NR]; MR] {
            assert!(x.len() >= MR * k && w.len() >= NR * k);
            // SAFETY: the caller guarantees AVX2, FMA and F16C; the lengths were checked above.
            unsafe { tile256::<W, MR, NR>(x.as_ptr(), w.as_ptr(), Prefetcher::new(ahead, k / 8), k) }
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C are available; `x` points at `MR · k` readable f32, `w` at `NR · k`
    /// readable elements (`ahead` is only prefetched).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile256<W: Weight, const MR: usize, const NR: usize>(
        x: *const f32,
        w: *const W,
        mut ahead: Prefetcher,
        k: usize,
    ) -> [[f32; NR]; MR] {
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        let mut wv = [_mm256_setzero_ps(); NR];
        let mut p = 0;
        while p + 8 <= k {
            ahead.step(p / 8, fetch);
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: p + 8 ≤ k, so the 8 lanes lie inside row j of w.
                *v = unsafe { load8(w.add(j * k + p)) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: as above, inside row i of x.
                let xv = unsafe { _mm256_loadu_ps(x.add(i * k + p)) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, wv, *a);
                }
            }
            p += 8;
        }
        ahead.finish(fetch);
        if p < k {
            let lanes: [i32; 8] = std::array::from_fn(|l| if p + l < k { -1 } else { 0 });
            // SAFETY: an unaligned load of 8 i32 from a local array.
            let mask = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: masked-off lanes are not read, and the k − p read ones lie inside row j;
                // 16-bit rows are copied (k − p elements) into a zero-padded buffer.
                *v = unsafe {
                    match W::KIND {
                        WeightKind::F32 => _mm256_maskload_ps(w.add(j * k + p).cast(), mask),
                        _ => load8(padded::<W, 8>(w.add(j * k + p), k - p).as_ptr()),
                    }
                };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: as above, inside row i of x.
                let xv = unsafe { _mm256_maskload_ps(x.add(i * k + p), mask) };
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, wv, *a);
                }
            }
        }
        let mut out = [[0f32; NR]; MR];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (o, &a) in o.iter_mut().zip(a) {
                let h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let q = _mm_add_ps(h, _mm_movehl_ps(h, h));
                *o = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps::<1>(q, q)));
            }
        }
        out
    }
}

/// The candle op: inputs `x` `[m, k]` (contiguous), `w` `[n, k]`, optionally `b` `[n]`; the
/// small kernel for few rows, [`gemm_wt`] beyond.
struct SmallMatmul {
    isa: Isa,
}

impl SmallMatmul {
    fn forward(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        (sw, lw): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = lx.shape().dims2()?;
        let (n, kw) = lw.shape().dims2()?;
        if kw != k {
            candle_core::bail!("small matmul: x is [{m}, {k}] but w is [{n}, {kw}]");
        }
        let b = match bias {
            Some((sb, lb)) if lb.shape().dims() == [n] => Some(f32_slice(sb, lb, "small matmul")?),
            Some((_, lb)) => candle_core::bail!("small matmul: the bias is {:?}, expected [{n}]", lb.shape()),
            None => None,
        };
        let x = f32_slice(sx, lx, "small matmul")?;
        let small = takes_kernel(m, n);
        let y = match (sw, lw.contiguous_offsets()) {
            (CpuStorage::F32(w), Some((s, e))) if small => matmul_wt(self.isa, x, &w[s..e], b, m, k, n),
            (CpuStorage::F32(w), Some((s, e))) => gemm_wt(x, &w[s..e], b, m, k, n),
            (CpuStorage::BF16(w), Some((s, e))) if small => matmul_wt(self.isa, x, &w[s..e], b, m, k, n),
            (CpuStorage::BF16(w), Some((s, e))) => with_widened(&w[s..e], |w| gemm_wt(x, w, b, m, k, n)),
            (CpuStorage::F16(w), Some((s, e))) if small => matmul_wt(self.isa, x, &w[s..e], b, m, k, n),
            (CpuStorage::F16(w), Some((s, e))) => with_widened(&w[s..e], |w| gemm_wt(x, w, b, m, k, n)),
            _ => candle_core::bail!("small matmul needs a contiguous f32, bf16 or f16 weight"),
        };
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-matmul-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, rng: &mut rand::rngs::StdRng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1f32..1.0)).collect()
    }

    /// candle's `x · Wᵀ + b`, and for each output element `Σ |x·w| + |b|`, the scale its
    /// rounding error is relative to.
    fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let xt = Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
        let mut y = xt.matmul(&wt.t().unwrap()).unwrap();
        if let Some(b) = b {
            y = y.broadcast_add(&Tensor::from_slice(b, n, &Device::Cpu).unwrap()).unwrap();
        }
        let scale = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                let dot: f32 = (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum();
                dot + b.map_or(0.0, |b| b[j].abs())
            })
            .collect();
        (y.flatten_all().unwrap().to_vec1().unwrap(), scale)
    }

    fn isas() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable].into_iter().filter(|i| i.available()).collect()
    }

    fn assert_close(isa: Isa, got: &[f32], want: &[f32], scale: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (e, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * s.max(f32::MIN_POSITIVE),
                "{isa:?}: element {e}: {g} vs candle's {w} (scale {s})"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn equals_candle_matmul(
            m in 1usize..=64,
            k in prop::sample::select(vec![1usize, 2, 15, 16, 17, 100, 257]),
            n in prop::sample::select(vec![1usize, 3, 4, 5, 15, 17, 100, 1001]),
            with_bias: bool,
            seed: u64,
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (x, w, b) = (random(m * k, &mut rng), random(n * k, &mut rng), random(n, &mut rng));
            let bias = with_bias.then_some(b.as_slice());
            let (want, scale) = reference(&x, &w, bias, m, k, n);
            for isa in isas() {
                assert_close(isa, &matmul_wt(isa, &x, &w, bias, m, k, n), &want, &scale);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn sixteen_bit_weights_give_the_widened_f32_weights_results_bit_for_bit(
            m in 1usize..=9,
            k in prop::sample::select(vec![1usize, 7, 8, 9, 15, 16, 17, 33, 100, 257]),
            n in prop::sample::select(vec![1usize, 3, 4, 5, 17]),
            with_bias: bool,
            seed: u64,
        ) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (x, w, b) = (random(m * k, &mut rng), random(n * k, &mut rng), random(n, &mut rng));
            let bias = with_bias.then_some(b.as_slice());
            let bf: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let hf: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            let bf_wide: Vec<f32> = bf.iter().map(|v| v.to_f32()).collect();
            let hf_wide: Vec<f32> = hf.iter().map(|v| v.to_f32()).collect();
            for isa in isas() {
                let bits = |y: Vec<f32>| y.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                prop_assert_eq!(
                    bits(matmul_wt(isa, &x, &bf, bias, m, k, n)),
                    bits(matmul_wt(isa, &x, &bf_wide, bias, m, k, n)),
                    "{:?} bf16", isa
                );
                prop_assert_eq!(
                    bits(matmul_wt(isa, &x, &hf, bias, m, k, n)),
                    bits(matmul_wt(isa, &x, &hf_wide, bias, m, k, n)),
                    "{:?} f16", isa
                );
            }
        }
    }

    #[test]
    fn linear_reads_sixteen_bit_weights_as_their_widened_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (k, n) = (67, 30);
        let w = Tensor::from_vec(random(n * k, &mut rng), (n, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(random(n, &mut rng), n, &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let narrow = w.to_dtype(dtype).unwrap();
            let wide = narrow.to_dtype(DType::F32).unwrap();
            // Through the kernel (few rows) and through candle (the weight widened for the call).
            for m in [3, MAX_ROWS_NARROW + 1] {
                let x = Tensor::from_vec(random(m * k, &mut rng), (m, k), &Device::Cpu).unwrap();
                let got = linear(&x, &narrow, Some(&b)).unwrap();
                let want = linear(&x, &wide, Some(&b)).unwrap();
                assert_eq!(got.dtype(), DType::F32);
                let (got, want): (Vec<f32>, Vec<f32>) =
                    (got.flatten_all().unwrap().to_vec1().unwrap(), want.flatten_all().unwrap().to_vec1().unwrap());
                assert_eq!(got, want, "{dtype:?}, {m} rows");
            }
        }
    }

    #[test]
    fn gemm_path_equals_candle_matmul() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Output widths below, at and above one task's minimum, and not multiples of 16.
        for (m, k, n) in [(130, 37, 5), (150, 64, 64), (129, 100, 250), (200, 17, 1001)] {
            let (x, w, b) = (random(m * k, &mut rng), random(n * k, &mut rng), random(n, &mut rng));
            for bias in [None, Some(b.as_slice())] {
                let (want, scale) = reference(&x, &w, bias, m, k, n);
                assert_close(Isa::detect(), &gemm_wt(&x, &w, bias, m, k, n), &want, &scale);
            }
        }
        assert_eq!(gemm_wt(&[], &[], Some(&[1.0, 2.0]), 2, 0, 2), [1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn the_prefetcher_asks_for_every_line_once_spread_over_the_steps() {
        let ahead = vec![0f32; 100]; // 400 bytes: 7 lines, the last one partly outside
        let base = ahead.as_ptr() as usize;
        for steps in [0, 1, 3, 5, 7, 40] {
            let mut pf = Prefetcher::new(&ahead, steps);
            let mut lines = Vec::new();
            for step in 0..steps {
                let before = lines.len();
                pf.step(step, |line| lines.push((line as usize - base) / 64));
                assert!(lines.len() - before <= 7usize.div_ceil(steps), "{steps} steps: a burst");
            }
            pf.finish(|line| lines.push((line as usize - base) / 64));
            assert_eq!(lines, (0..7).collect::<Vec<_>>(), "{steps} steps");
        }
        let mut none = Prefetcher::new(&ahead[..0], 4);
        none.step(0, |_| panic!("an empty slice has no lines"));
        none.finish(|_| panic!("an empty slice has no lines"));
    }

    #[test]
    fn a_rows_result_does_not_depend_on_its_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (m, k, n) = (11, 903, 2050);
        let (x, w, b) = (random(m * k, &mut rng), random(n * k, &mut rng), random(n, &mut rng));
        for isa in isas() {
            let all = matmul_wt(isa, &x, &w, Some(&b), m, k, n);
            for i in 0..m {
                let alone = matmul_wt(isa, &x[i * k..(i + 1) * k], &w, Some(&b), 1, k, n);
                assert_eq!(alone, all[i * n..(i + 1) * n], "{isa:?}: row {i}");
            }
        }
    }

    #[test]
    fn linear_takes_the_kernel_for_few_rows_and_gemm_beyond() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (k, n) = (37, 45);
        let w = Tensor::from_vec(random(n * k, &mut rng), (n, k), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(random(n, &mut rng), n, &Device::Cpu).unwrap();
        for m in [1, MAX_ROWS, MAX_ROWS + 1, MAX_ROWS_NARROW, MAX_ROWS_NARROW + 1] {
            let x = Tensor::from_vec(random(m * k, &mut rng), (m, k), &Device::Cpu).unwrap();
            let (xv, wv, bv): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                x.flatten_all().unwrap().to_vec1().unwrap(),
                w.flatten_all().unwrap().to_vec1().unwrap(),
                b.to_vec1().unwrap(),
            );
            for bias in [None, Some(&b)] {
                let got = linear(&x, &w, bias).unwrap();
                assert_eq!(got.dims(), [m, n]);
                let (want, scale) = reference(&xv, &wv, bias.map(|_| bv.as_slice()), m, k, n);
                assert_close(Isa::detect(), &got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &want, &scale);
            }
        }
        // Wide products leave the kernel beyond MAX_ROWS, narrow ones beyond MAX_ROWS_NARROW.
        assert!(takes_kernel(MAX_ROWS, 9728) && !takes_kernel(MAX_ROWS + 1, 9728));
        assert!(takes_kernel(MAX_ROWS_NARROW, 896) && !takes_kernel(MAX_ROWS_NARROW + 1, 896));
        // Other dtypes do not fit (the caller takes candle's matmul).
        let x = Tensor::ones((2, k), DType::BF16, &Device::Cpu).unwrap();
        assert!(!fits(&x, &w, Some(&b)));
        assert!(linear(&x, &w, Some(&b)).is_err());
    }

    #[test]
    fn empty_inputs_give_empty_or_bias_outputs() {
        assert!(matmul_wt(Isa::Portable, &[], &[1.0; 6], None, 0, 3, 2).is_empty());
        assert_eq!(matmul_wt::<f32>(Isa::detect(), &[], &[], Some(&[1.0, 2.0]), 2, 0, 2), [1.0, 2.0, 1.0, 2.0]);
    }
}
