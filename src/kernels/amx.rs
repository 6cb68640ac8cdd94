//! `y = x · Wᵀ (+ b)` with Intel AMX (`tdpbf16ps`) for an f32 `x` and a `W` whose values are
//! exact in bf16 (a bf16 checkpoint's matrices), to f32 accuracy.
//!
//! AMX multiplies bf16 tiles into f32 accumulators at many times the f32 FMA rate. `W` is exact
//! in bf16; `x` is split exactly into three bf16 parts (`x = hi + mid + lo`: each part is the
//! top 8 significant bits of what the previous ones left, by truncation, so the 24 bits of an f32
//! are all kept), and `W·x = W·hi + W·mid + W·lo` takes three tile products whose terms are exact
//! in f32. Only the accumulation rounds, in f32, as an f32 dot product does: measured against f64,
//! the error is a few 1e-8 of `Σ|terms|` (`tests`).
//!
//! `W` is copied once, at load, into a tile-blocked layout ([`PackedRows`]): each 16 rows × 32
//! columns block is 1 KB, contiguous, in AMX's pair layout, so a product streams the weights at
//! the memory's speed. Three blocks of 16 outputs are computed at once (three accumulator tiles
//! take turns), for each 16 rows of `x`; long `k` runs in chunks with the accumulators stored in
//! the output between chunks, so that a chunk of `x` stays in cache while every weight block
//! passes it. Rayon tasks take (a pass of `x`'s row blocks, a range of output groups) pairs.
//!
//! Each output element is a sum over `k` in an order fixed by `k` alone, so a row's result does
//! not depend on the other rows of its batch. Linux on x86-64 only (the tile state must be asked
//! for); [`has_amx`] is false elsewhere, and nothing packs.

use super::isa::has_amx;
use super::packed::PackedWeight;
use super::slices::Columns;
use candle_core::{CpuStorage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Ask for the tile state: whether the CPU has AMX-TILE and AMX-BF16 and Linux grants it to
/// this process ([`has_amx`] asks once).
pub(super) fn request_tiles() -> bool {
    tiles::request()
}

/// Configure the calling thread's tiles as the products here use them (all eight 16 rows × 64
/// bytes), once per thread; for code that issues tile instructions of its own
/// (`examples/bench_amx.rs`). [`has_amx`] must be true.
pub fn configure_thread() {
    tiles::configure();
}

/// Values per tile row (64 bytes of bf16) and rows per tile.
const TILE_K: usize = 32;
const TILE_ROWS: usize = 16;
/// Output blocks of 16 computed together (three accumulator tiles).
const GROUP: usize = 3;
/// `k` blocks per chunk when `x` has more than 16 rows: a chunk of `x`'s three parts (48 KB per
/// 16 rows) stays in cache while the weight blocks of a task pass it.
const K_BLOCKS_PER_CHUNK: usize = 16;
/// Row blocks of `x` per pass over a task's weight groups: their three parts of a `k` chunk
/// (16 × 3 KB each) stay in the core's L2 cache while the groups pass.
const X_BLOCKS_PER_PASS: usize = 16;
/// Bytes of weights per rayon task for one 16-row block of `x` (as the f32 kernel's).
const W_BYTES_PER_TASK: usize = 192 * 1024;

/// One tile row: 32 bf16 bit patterns, 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; TILE_K]);

const ZERO_LINE: Line = Line([0; TILE_K]);

/// A weight matrix `[n, k]` in AMX's tile-blocked pair layout: block `(r, c)` (rows
/// `[16r, 16r + 16)`, columns `[32c, 32c + 32)`) is 16 lines at `(r · k_blocks + c) · 16`; its
/// line `p` holds, for each of the 16 rows `i`, the columns `32c + 2p` and `32c + 2p + 1` at
/// `2i` and `2i + 1`. Zero beyond `n` and `k`, and two zero row blocks past the last, so that a
/// group of three blocks starting at any block of a view stays inside.
struct Packed {
    k: usize,
    k_blocks: usize,
    lines: Vec<Line>,
}

/// Rows `[16 · first_block, 16 · first_block + n)` of a packed matrix: a whole matrix or one
/// part of a fused one, sharing its storage.
#[derive(Clone)]
pub struct PackedRows {
    packed: Arc<Packed>,
    first_block: usize,
    n: usize,
}

impl std::fmt::Debug for PackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedRows({} × {} from block {})", self.n, self.packed.k, self.first_block)
    }
}

impl PackedRows {
    /// `w` (`[n, k]` on the CPU, bf16, or f32 whose every value is exact in bf16) packed for
    /// [`linear`]; `None` on a CPU without AMX ([`has_amx`]) or when `w` is anything else.
    pub fn pack(w: &Tensor) -> candle_core::Result<Option<PackedRows>> {
        if !has_amx() || !w.device().is_cpu() || w.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let (storage, layout) = w.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else { return Ok(None) };
        let Some((start, end)) = layout.contiguous_offsets() else { return Ok(None) };
        let packed = match storage {
            CpuStorage::BF16(v) => Packed::new(n, k, |i| v[start + i].to_bits()),
            CpuStorage::F32(v) => {
                let v = &v[start..end];
                if !exact_in_bf16(v) {
                    return Ok(None);
                }
                Packed::new(n, k, |i| (v[i].to_bits() >> 16) as u16)
            }
            _ => return Ok(None),
        };
        Ok(Some(PackedRows { packed: Arc::new(packed), first_block: 0, n }))
    }

    /// Rows `[from, from + n)` of this matrix, sharing its storage; `None` unless `from` is a
    /// multiple of 16 and the rows are inside.
    pub fn rows(&self, from: usize, n: usize) -> Option<PackedRows> {
        (from.is_multiple_of(TILE_ROWS) && from + n <= self.n).then(|| PackedRows {
            packed: self.packed.clone(),
            first_block: self.first_block + from / TILE_ROWS,
            n,
        })
    }

    /// The bytes the packed copy takes (the whole matrix, for any view of it).
    pub fn bytes(&self) -> usize {
        self.packed.lines.len() * size_of::<Line>()
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

/// Whether every value is exact in bf16 (its low 16 bits zero), as a bf16 checkpoint's are once
/// widened.
fn exact_in_bf16(values: &[f32]) -> bool {
    values.par_iter().all(|v| v.to_bits() & 0xffff == 0)
}

impl Packed {
    /// Pack `n × k` values given as bf16 bit patterns by their row-major index.
    fn new(n: usize, k: usize, value: impl Fn(usize) -> u16 + Sync) -> Packed {
        let k_blocks = k.div_ceil(TILE_K);
        let row_blocks = n.div_ceil(TILE_ROWS) + GROUP - 1;
        let mut lines = vec![ZERO_LINE; row_blocks * k_blocks * TILE_ROWS];
        lines.par_chunks_mut(k_blocks * TILE_ROWS).enumerate().for_each(|(r, row_block)| {
            for (c, tile) in row_block.chunks_mut(TILE_ROWS).enumerate() {
                for (p, line) in tile.iter_mut().enumerate() {
                    for i in 0..TILE_ROWS {
                        let row = r * TILE_ROWS + i;
                        for half in 0..2 {
                            let col = c * TILE_K + 2 * p + half;
                            if row < n && col < k {
                                line.0[2 * i + half] = value(row * k + col);
                            }
                        }
                    }
                }
            }
        });
        Packed { k, k_blocks, lines }
    }
}

/// `x · Wᵀ + b` for a CPU f32 `x` `[m, k]` and `w` packed `[n, k]`, `b` `[n]` f32.
pub fn linear(x: &Tensor, w: &PackedRows, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    super::packed::linear(x, w, b)
}

impl PackedWeight for PackedRows {
    const NAME: &'static str = "amx-matmul";

    fn dims(&self) -> (usize, usize) {
        PackedRows::dims(self)
    }

    fn product(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        matmul_wt(x, m, self, bias)
    }
}

/// `x` (`[m, k]` f32) split into three bf16 parts (`x = hi + mid + lo` exactly, short of f32
/// subnormals), tile-blocked as the weights are, so that each tile is 1 KB read in order: the
/// tile of part `p` for rows `[16j, 16j + 16)` and columns `[32c, 32c + 32)` is the 16 lines at
/// `((j · k_blocks + c) · 3 + p) · 16`, one line per row; zero beyond `m` and `k`.
/// Every line of `lines` is written (a reused buffer needs no clearing).
fn split(lines: &mut Vec<Line>, x: &[f32], m: usize, k: usize, k_blocks: usize) {
    let block_lines = k_blocks * 3 * TILE_ROWS;
    let len = m.div_ceil(TILE_ROWS) * block_lines;
    if lines.len() < len {
        lines.resize(len, ZERO_LINE);
    }
    lines.truncate(len);
    lines.par_chunks_mut(block_lines).zip(x.par_chunks(TILE_ROWS * k)).for_each(|(block, rows)| {
        // The rows past `m` in the last block.
        for r in rows.len() / k..TILE_ROWS {
            for tile in block.chunks_mut(3 * TILE_ROWS) {
                (tile[r], tile[TILE_ROWS + r], tile[2 * TILE_ROWS + r]) = (ZERO_LINE, ZERO_LINE, ZERO_LINE);
            }
        }
        for (r, row) in rows.chunks(k).enumerate() {
            for (tile, values) in block.chunks_mut(3 * TILE_ROWS).zip(row.chunks(TILE_K)) {
                // Whole lines in local arrays, so that the loop runs in vector registers.
                let mut v = [0f32; TILE_K];
                v[..values.len()].copy_from_slice(values);
                let (mut hi, mut mid, mut lo) = (ZERO_LINE, ZERO_LINE, ZERO_LINE);
                for i in 0..TILE_K {
                    let top = |v: f32| f32::from_bits(v.to_bits() & 0xffff_0000);
                    let h = top(v[i]);
                    let rest = v[i] - h;
                    let m = top(rest);
                    hi.0[i] = (h.to_bits() >> 16) as u16;
                    mid.0[i] = (m.to_bits() >> 16) as u16;
                    lo.0[i] = ((rest - m).to_bits() >> 16) as u16;
                }
                (tile[r], tile[TILE_ROWS + r], tile[2 * TILE_ROWS + r]) = (hi, mid, lo);
            }
        }
    });
}

/// Largest split of `x` (bytes) kept in a thread's reusable buffer between calls (a capture
/// batch of 800 rows into MLP down takes 23 MB); a larger one is freed after its product.
const MAX_REUSED_PARTS_BYTES: usize = 64 << 20;

thread_local! {
    /// The buffer [`split`] fills, reused so that each product does not map (and page-fault in)
    /// a fresh one: on this VM that cost as much as the split itself.
    static PARTS: std::cell::Cell<Vec<Line>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `x · Wᵀ + b`, `x` `[m, k]` row-major, as `[m, n]` (a [`PackedRows`] exists only where
/// [`has_amx`]).
fn matmul_wt(x: &[f32], m: usize, w: &PackedRows, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = w.dims();
    let packed = &*w.packed;
    let k_blocks = packed.k_blocks;
    let m_blocks = m.div_ceil(TILE_ROWS);
    let m_pad = m_blocks * TILE_ROWS;
    let groups = n.div_ceil(TILE_ROWS * GROUP);
    if m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    // Taken out of the thread's slot (a product that re-enters on this thread finds it empty).
    let mut parts = PARTS.take();
    split(&mut parts, x, m, k, k_blocks);
    // Whole groups of 48 columns write straight into `y` (`m_pad` rows, the padding rows cut at
    // the end); the last group, if `n` ends inside it, into `edge`, copied over at the end.
    let whole_groups = n / (GROUP * TILE_ROWS);
    let mut y = vec![0f32; m_pad * n];
    let mut edge = vec![0f32; if whole_groups < groups { m_pad * GROUP * TILE_ROWS } else { 0 }];
    let (out, side) = (Columns(y.as_mut_ptr()), Columns(edge.as_mut_ptr()));
    // The accumulators start from the bias (each tile's 16 rows read the same 16 values).
    let bias: Option<Vec<f32>> = bias.map(|b| {
        let mut padded = b.to_vec();
        padded.resize(groups * GROUP * TILE_ROWS, 0.0);
        padded
    });
    let chunk = if m_blocks == 1 { k_blocks } else { K_BLOCKS_PER_CHUNK };
    // Tasks: (a pass of `x`'s row blocks, a range of weight groups). Each pass of a `k` chunk
    // (at most 16 row blocks, 48 KB each) stays in cache while its range of groups passes, and
    // each group's chunk (48 KB) while the pass's row blocks pass it; each task reads its pass
    // of `x` once and its range of weights once per pass. So: as few ranges as keep every core
    // busy, passes of equal size. One row block (a decode step): ranges of ~192 KB of weights.
    let passes = m_blocks.div_ceil(X_BLOCKS_PER_PASS);
    let pass_len = m_blocks.div_ceil(passes);
    let ranges = if m_blocks == 1 {
        groups.div_ceil((W_BYTES_PER_TASK / (GROUP * size_of::<Line>() * TILE_ROWS * k_blocks)).max(1))
    } else {
        (2 * rayon::current_num_threads()).div_ceil(passes).min(groups)
    };
    let range_len = groups.div_ceil(ranges);
    (0..passes * ranges).into_par_iter().for_each(|task| {
        tiles::configure();
        let (pass, range) = (task / ranges, task % ranges);
        let rows = pass * pass_len..((pass + 1) * pass_len).min(m_blocks);
        let columns = range * range_len..((range + 1) * range_len).min(groups);
        for c0 in (0..k_blocks).step_by(chunk) {
            let c1 = (c0 + chunk).min(k_blocks);
            {
                for (g, j) in columns.clone().flat_map(|g| rows.clone().map(move |j| (g, j))) {
                    let block = w.first_block + GROUP * g;
                    let w_at = |t: usize| packed.lines[((block + t) * k_blocks + c0) * TILE_ROWS..].as_ptr().cast();
                    let operands = tiles::Operands {
                        w: [w_at(0), w_at(1), w_at(2)],
                        x: parts[(j * k_blocks + c0) * 3 * TILE_ROWS..].as_ptr().cast(),
                        blocks: c1 - c0,
                    };
                    let (c_at, ld) = if g < whole_groups {
                        (out.at(j * TILE_ROWS * n + g * GROUP * TILE_ROWS), n)
                    } else {
                        (side.at(j * TILE_ROWS * GROUP * TILE_ROWS), GROUP * TILE_ROWS)
                    };
                    let start = match &bias {
                        _ if c0 > 0 => tiles::Start::Stored,
                        Some(b) => tiles::Start::Rows(b[g * GROUP * TILE_ROWS..].as_ptr()),
                        None => tiles::Start::Zero,
                    };
                    // SAFETY: the tile state is configured on this thread; every tile read lies in
                    // `parts` (16 rows of a part at its row stride: the blocks `c0..c1` of row
                    // block `j`, three parts each), `packed.lines` (the blocks `c0..c1` of the
                    // group's three weight blocks, which the two padding blocks keep inside) or
                    // the padded bias, every tile written in this task's columns of `y` or `edge`.
                    unsafe { tiles::group_product(c_at, ld, start, &operands) };
                }
            }
        }
    });
    if !edge.is_empty() {
        let from = whole_groups * GROUP * TILE_ROWS;
        y.par_chunks_mut(n).zip(edge.par_chunks(GROUP * TILE_ROWS)).for_each(|(y, e)| {
            y[from..].copy_from_slice(&e[..n - from]);
        });
    }
    if parts.capacity() * size_of::<Line>() <= MAX_REUSED_PARTS_BYTES {
        PARTS.set(parts);
    }
    y.truncate(m * n);
    y
}

/// The tile instructions (Linux on x86-64).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tiles {
    use std::arch::asm;
    use std::cell::Cell;

    /// Whether the CPU has AMX-TILE and AMX-BF16 and Linux grants this process the tile state.
    pub fn request() -> bool {
        // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments; the permission is the process's.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    /// The tile configuration `ldtilecfg` reads (palette 1).
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    thread_local! {
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }

    /// Configure this thread's eight tiles as 16 rows of 64 bytes, once per thread (the
    /// configuration is part of the thread's saved state).
    pub fn configure() {
        if CONFIGURED.get() {
            return;
        }
        let mut config =
            TileConfig { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
        for t in 0..8 {
            config.bytes_per_row[t] = 64;
            config.rows[t] = 16;
        }
        // SAFETY: a valid palette-1 layout, 64-byte aligned; the process was granted the tile
        // state (`request`, through `has_amx`, before any product).
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config as *const TileConfig) };
        CONFIGURED.set(true);
    }

    /// What the three accumulator tiles start from.
    pub enum Start {
        /// Zero.
        Zero,
        /// Every row the 48 values at this pointer (a bias).
        Rows(*const f32),
        /// The tiles stored at `c` by the previous `k` chunk.
        Stored,
    }

    /// Bytes of one tile (16 lines of 64 bytes): a packed weight block, one part of a block of `x`.
    const TILE_BYTES: usize = 1024;
    const _: () = assert!(TILE_BYTES == super::TILE_ROWS * size_of::<super::Line>());

    /// The tiles a group product reads, at its first `k` block.
    pub struct Operands {
        /// The three weight blocks' tiles (each next `k` block one tile further).
        pub w: [*const u16; 3],
        /// Part 0 of the block of `x` (parts 1 and 2 follow it, each next `k` block three tiles further).
        pub x: *const u16,
        /// How many `k` blocks to accumulate.
        pub blocks: usize,
    }

    /// 48 zeros, read as the starting rows of [`Start::Zero`] (row stride 0).
    static ZEROS: [f32; 48] = [0.0; 48];

    /// Accumulate, over `operands.blocks` consecutive `k` blocks, the products of 16 rows of `x`
    /// (its three parts) with three blocks of 16 weight rows into the three 16 × 16 f32 tiles at
    /// `c`, `c + 16`, `c + 32` (rows `ld` values apart), starting from `start`.
    ///
    /// The loads, every `tdpbf16ps` and the stores are one `asm!` statement: the accumulators
    /// live in tile registers, which the compiler does not know of, so no tile value may be
    /// carried from one statement to the next. Only the tile configuration (`ldtilecfg`, which
    /// the compiler never touches either) is carried between statements, as thread state.
    ///
    /// # Safety
    /// [`configure`] ran on this thread; every pointer is valid for its whole tile, for each of
    /// the `blocks` steps (and `start`'s, and `c`'s with row stride `ld`).
    pub unsafe fn group_product(c: *mut f32, ld: usize, start: Start, operands: &Operands) {
        // Blocked tiles: rows 64 bytes apart; `c`'s rows `ld` f32 apart.
        let (c_stride, line) = (ld * 4, 64usize);
        let (from, from_stride) = match start {
            Start::Zero => (ZEROS.as_ptr(), 0),
            Start::Rows(b) => (b, 0),
            Start::Stored => (c.cast_const(), c_stride),
        };
        // SAFETY: the caller's contract above: the tile configuration is loaded on this thread
        // and every pointer covers its whole tile (the three accumulators at `from` and `c` are
        // 0, 64 and 128 bytes on; the weight pointers step one tile per block, `x` three). The
        // statement uses tmm0–tmm7 as scratch and leaves nothing in them that is read later.
        unsafe {
            asm!(
                "tileloadd tmm0, [{from} + {fs}*1]",
                "tileloadd tmm1, [{from} + {fs}*1 + 64]",
                "tileloadd tmm2, [{from} + {fs}*1 + 128]",
                "test {n}, {n}",
                "jz 3f",
                "2:",
                "tileloadd tmm3, [{w0} + {s}*1]",
                "tileloadd tmm4, [{w1} + {s}*1]",
                "tileloadd tmm5, [{w2} + {s}*1]",
                "tileloadd tmm6, [{x} + {s}*1]",
                "tileloadd tmm7, [{x} + {s}*1 + {tile}]",
                "tdpbf16ps tmm0, tmm6, tmm3",
                "tdpbf16ps tmm1, tmm6, tmm4",
                "tdpbf16ps tmm2, tmm6, tmm5",
                "tileloadd tmm6, [{x} + {s}*1 + {two_tiles}]",
                "tdpbf16ps tmm0, tmm7, tmm3",
                "tdpbf16ps tmm1, tmm7, tmm4",
                "tdpbf16ps tmm2, tmm7, tmm5",
                "tdpbf16ps tmm0, tmm6, tmm3",
                "tdpbf16ps tmm1, tmm6, tmm4",
                "tdpbf16ps tmm2, tmm6, tmm5",
                "add {w0}, {tile}",
                "add {w1}, {tile}",
                "add {w2}, {tile}",
                "add {x}, {three_tiles}",
                "dec {n}",
                "jnz 2b",
                "3:",
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c} + {cs}*1 + 64], tmm1",
                "tilestored [{c} + {cs}*1 + 128], tmm2",
                from = in(reg) from,
                fs = in(reg) from_stride,
                n = inout(reg) operands.blocks => _,
                w0 = inout(reg) operands.w[0] => _,
                w1 = inout(reg) operands.w[1] => _,
                w2 = inout(reg) operands.w[2] => _,
                x = inout(reg) operands.x => _,
                s = in(reg) line,
                c = in(reg) c,
                cs = in(reg) c_stride,
                tile = const TILE_BYTES,
                two_tiles = const 2 * TILE_BYTES,
                three_tiles = const 3 * TILE_BYTES,
            );
        }
    }
}

/// Elsewhere there are no tiles: [`has_amx`] is false and nothing here runs.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod tiles {
    pub fn request() -> bool {
        false
    }

    pub fn configure() {}

    /// What the accumulators start from (as on x86-64).
    pub enum Start {
        Zero,
        Rows(*const f32),
        Stored,
    }

    /// The tiles a group product reads (as on x86-64).
    pub struct Operands {
        pub w: [*const u16; 3],
        pub x: *const u16,
        pub blocks: usize,
    }

    /// # Safety
    /// Never called: [`super::has_amx`] is false on this platform.
    pub unsafe fn group_product(_c: *mut f32, _ld: usize, _start: Start, _operands: &Operands) {
        unreachable!("AMX products on a platform without AMX")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_core::Device;

    /// A deterministic value in [-1, 1).
    fn noise(i: usize, seed: u64) -> f32 {
        let mut s = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        s ^= s >> 29;
        s = s.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s ^= s >> 32;
        ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }

    #[test]
    fn split_parts_add_up_to_x_exactly() {
        let (m, k) = (3, 40);
        let x: Vec<f32> = (0..m * k).map(|i| noise(i, 1) * 10f32.powi((i % 9) as i32 - 4)).collect();
        // A reused buffer full of other values: every line must be written.
        let mut lines = vec![Line([0x7fc0; TILE_K]); 1000];
        split(&mut lines, &x, m, k, 2);
        assert_eq!(lines.len(), 2 * 3 * TILE_ROWS);
        assert!(lines[m..TILE_ROWS].iter().all(|l| l.0 == [0; TILE_K]), "rows past m are zero");
        let part = |p: usize, r: usize, c: usize| {
            f32::from_bits(u32::from(lines[((c / TILE_K) * 3 + p) * TILE_ROWS + r].0[c % TILE_K]) << 16)
        };
        for r in 0..m {
            for c in 0..k {
                let sum = part(0, r, c) + part(1, r, c) + part(2, r, c);
                assert_eq!(sum, x[r * k + c], "row {r}, column {c}");
            }
        }
    }

    /// The AMX product against an f64 reference, for shapes with tails in every dimension, more
    /// than one `k` chunk and more than one row block of `x`, a view of rows, with and without a
    /// bias. On a CPU without AMX it says so and checks nothing.
    #[test]
    fn amx_products_match_f64_to_f32_accuracy() {
        if !has_amx() {
            eprintln!("skipped: no AMX");
            return;
        }
        let device = Device::Cpu;
        for (m, n, k, from) in [(1, 16, 32, 0), (5, 50, 70, 16), (20, 100, 600, 32), (37, 161, 1030, 0)] {
            let rows = from + n + 7;
            let wv: Vec<half::bf16> = (0..rows * k).map(|i| half::bf16::from_f32(noise(i, 2))).collect();
            let xv: Vec<f32> = (0..m * k).map(|i| noise(i, 3)).collect();
            let bv: Vec<f32> = (0..n).map(|i| noise(i, 4)).collect();
            let w = Tensor::from_vec(wv.clone(), (rows, k), &device).unwrap();
            let x = Tensor::from_vec(xv.clone(), (m, k), &device).unwrap();
            let b = Tensor::from_vec(bv.clone(), n, &device).unwrap();
            let packed = PackedRows::pack(&w).unwrap().expect("a bf16 matrix packs");
            let view = packed.rows(from, n).expect("an aligned view");
            for bias in [None, Some(&b)] {
                let y: Vec<Vec<f32>> = linear(&x, &view, bias).unwrap().to_vec2().unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|c| wv[(from + j) * k + c].to_f64() * f64::from(xv[i * k + c]));
                        let (exact, size) = terms.fold((0f64, 0f64), |(s, a), t| (s + t, a + t.abs()));
                        let b = bias.map_or(0.0, |_| f64::from(bv[j]));
                        let err = (f64::from(y[i][j]) - exact - b).abs() / (size + b.abs());
                        assert!(err < 2e-7, "m {m} n {n} k {k} from {from}: y[{i}][{j}] off by {err:.1e}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        if !has_amx() {
            eprintln!("skipped: no AMX");
            return;
        }
        let device = Device::Cpu;
        let (m, n, k) = (37, 70, 1100);
        let w: Vec<half::bf16> = (0..n * k).map(|i| half::bf16::from_f32(noise(i, 5))).collect();
        let w = PackedRows::pack(&Tensor::from_vec(w, (n, k), &device).unwrap()).unwrap().unwrap();
        let x = Tensor::from_vec((0..m * k).map(|i| noise(i, 6)).collect::<Vec<f32>>(), (m, k), &device).unwrap();
        let whole: Vec<Vec<f32>> = linear(&x, &w, None).unwrap().to_vec2().unwrap();
        for i in [0, 17, 36] {
            let alone: Vec<Vec<f32>> = linear(&x.narrow(0, i, 1).unwrap(), &w, None).unwrap().to_vec2().unwrap();
            assert_eq!(alone[0], whole[i], "row {i}");
        }
    }

    #[test]
    fn only_bf16_exact_matrices_pack() {
        if !has_amx() {
            eprintln!("skipped: no AMX");
            return;
        }
        let device = Device::Cpu;
        let exact = Tensor::new(&[[1.0f32, 0.5], [-2.0, 3.0]], &device).unwrap();
        assert!(PackedRows::pack(&exact).unwrap().is_some());
        let inexact = Tensor::new(&[[1.0f32, 0.1], [-2.0, 3.0]], &device).unwrap();
        assert!(PackedRows::pack(&inexact).unwrap().is_none(), "0.1 is not a bf16 value");
        let f16 = exact.to_dtype(DType::F16).unwrap();
        assert!(PackedRows::pack(&f16).unwrap().is_none());
        let packed = PackedRows::pack(&exact).unwrap().unwrap();
        assert!(packed.rows(1, 1).is_none(), "a view must start at a multiple of 16 rows");
    }
}
