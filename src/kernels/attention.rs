//! Attention of a batch on the CPU in f32 as one op: for each (sequence, key/value head), the
//! scores of its query heads, the masked softmax and the weighted sum of the values, written
//! straight into the `[B, T, heads · D]` rows the output projection reads.
//!
//! candle's batched matmul runs the (sequence, head) products one after another, each a gemm
//! call that is too small to split across threads, so one core idled through attention; the
//! scores and probabilities were full `[B, heads, T, S]` tensors and the output was transposed
//! in one more copy. Here every (sequence, key/value head) is one task: the tasks run in
//! parallel, the scores of at most [`QUERY_BLOCK`] queries exist at a time, keys that the
//! causal mask hides from a whole block of queries are skipped, and the keys and values are
//! read where they lie (a view of the KV cache is not copied).

use super::fused::softmax_in_place;
use super::slices::{f32_slice, Columns};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Queries per block of scores: a block's scores are `QUERY_BLOCK × S` f32.
const QUERY_BLOCK: usize = 64;

/// `softmax(q kᵀ · scale + mask) v` for `q` `[B, heads, T, D]`, `k` and `v` `[B, kv_heads, S, D]`
/// (any strides but a unit one along `D`: a view of a cache) and an additive causal `mask`
/// `[B, 1, T, S]` (queries are the last `T` of the `S` positions, as
/// the decoder's masks build it), grouped-query (`heads` a multiple of `kv_heads`), as
/// `[B, T, heads · D]`. `None` where the inputs do not fit: not all f32 on the CPU, `q` or
/// `mask` not contiguous.
pub(crate) fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> candle_core::Result<Option<Tensor>> {
    let (b, heads, t, d) = q.dims4()?;
    let (_, kv_heads, s, _) = k.dims4()?;
    let fits = [q, k, v, mask].iter().all(|x| x.device().is_cpu() && x.dtype() == DType::F32)
        && q.is_contiguous()
        && mask.is_contiguous()
        && mask.dims() == [b, 1, t, s]
        && k.dims() == v.dims()
        && k.dims() == [b, kv_heads, s, d]
        && kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && t <= s
        && k.stride()[3] == 1
        && v.stride()[3] == 1;
    if !fits {
        return Ok(None);
    }
    let op = FusedAttention { mask: mask.clone(), scale: scale as f32 };
    Ok(Some(q.apply_op3_no_bwd(k, v, &op)?))
}

struct FusedAttention {
    mask: Tensor,
    scale: f32,
}

/// Keys or values of one (sequence, key/value head) in a storage: the rows `[S, D]` start at
/// `offset` and are `row_stride` apart.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    offset: usize,
    row_stride: usize,
}

impl<'a> Rows<'a> {
    /// The rows of sequence `b`, key/value head `g` of a `[B, kv_heads, S, D]` layout.
    fn of(data: &'a [f32], layout: &Layout, b: usize, g: usize) -> Rows<'a> {
        let stride = layout.stride();
        Rows { data, offset: layout.start_offset() + b * stride[0] + g * stride[1], row_stride: stride[2] }
    }

    /// Whether `rows` rows of `d` values from here are inside the storage.
    fn fits(&self, rows: usize, d: usize) -> bool {
        rows == 0 || self.offset + (rows - 1) * self.row_stride + d <= self.data.len()
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let q = f32_slice(s1, l1, self.name())?;
        let (CpuStorage::F32(k), CpuStorage::F32(v)) = (s2, s3) else {
            candle_core::bail!("fused-attention needs f32 keys and values");
        };
        let (b, heads, t, d) = l1.shape().dims4()?;
        let (_, kv_heads, s, _) = l2.shape().dims4()?;
        let (mask_storage, mask_layout) = self.mask.storage_and_layout();
        let candle_core::Storage::Cpu(mask_storage) = &*mask_storage else {
            candle_core::bail!("fused-attention needs the mask on the CPU");
        };
        let mask = f32_slice(mask_storage, mask_layout, self.name())?;
        let in_bounds = (0..b)
            .all(|bi| (0..kv_heads).all(|g| Rows::of(k, l2, bi, g).fits(s, d) && Rows::of(v, l3, bi, g).fits(s, d)));
        if !in_bounds || mask.len() != b * t * s {
            candle_core::bail!("fused-attention: keys, values or mask do not match the queries");
        }
        let n_rep = heads / kv_heads;
        let mut out = vec![0f32; b * t * heads * d];
        let dst = Columns(out.as_mut_ptr());
        (0..b * kv_heads).into_par_iter().for_each(|task| {
            let (bi, g) = (task / kv_heads, task % kv_heads);
            let (keys, values) = (Rows::of(k, l2, bi, g), Rows::of(v, l3, bi, g));
            let block_rows = if t == 1 { n_rep } else { QUERY_BLOCK.min(t) };
            let mut scores = vec![0f32; block_rows * s];
            let mut run = |block: Block<'_>| block.run(keys, values, self.scale, &mut scores, dst);
            if t == 1 {
                // A decode step: the group's query heads are contiguous rows, and so are their
                // outputs, so one block serves them all (a third of the gemm calls on SmolLM2).
                let first = bi * heads + g * n_rep;
                let mask = &mask[bi * s..][..s];
                run(Block {
                    queries: &q[first * d..][..n_rep * d],
                    d,
                    seen: s,
                    mask: &|_| mask,
                    dst: first * d,
                    stride: d,
                });
                return;
            }
            for h in g * n_rep..(g + 1) * n_rep {
                for t0 in (0..t).step_by(QUERY_BLOCK) {
                    let rows = QUERY_BLOCK.min(t - t0);
                    run(Block {
                        queries: &q[((bi * heads + h) * t + t0) * d..][..rows * d],
                        d,
                        // The causal mask hides keys past the block's last query from all of it.
                        seen: s - t + t0 + rows,
                        mask: &|i| &mask[(bi * t + t0 + i) * s..][..s],
                        dst: ((bi * t + t0) * heads + h) * d,
                        stride: heads * d,
                    });
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, heads * d))))
    }
}

/// Queries of one task that attend to the same keys: `queries` `[rows, d]`, each seeing the
/// first `seen` keys; row `i` takes the additive mask row `mask(i)` and writes its output at
/// `dst + i · stride` of the op's output.
struct Block<'a> {
    queries: &'a [f32],
    d: usize,
    seen: usize,
    mask: &'a dyn Fn(usize) -> &'a [f32],
    dst: usize,
    stride: usize,
}

impl Block<'_> {
    /// Scores, softmax and the value sum of the block, with `scores` as scratch
    /// (at least `rows · seen`).
    fn run(&self, keys: Rows<'_>, values: Rows<'_>, scale: f32, scores: &mut [f32], out: Columns) {
        let (d, seen) = (self.d, self.seen);
        let rows = self.queries.len() / d;
        let scores = &mut scores[..rows * seen];
        // SAFETY: `queries` is [rows, d] row-major; the keys' first `seen` rows are in bounds
        // (`Rows::fits`, checked by the op); `scores` is [rows, seen] row-major.
        unsafe {
            gemm::gemm(
                rows,
                seen,
                d,
                scores.as_mut_ptr(),
                1,
                seen as isize,
                false,
                self.queries.as_ptr(),
                1,
                d as isize,
                keys.data.as_ptr().add(keys.offset),
                keys.row_stride as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, row) in scores.chunks_exact_mut(seen).enumerate() {
            softmax_in_place(row, &(self.mask)(i)[..seen], 1.0);
        }
        // SAFETY: `scores` is [rows, seen]; the values' first `seen` rows are in bounds; the
        // destination rows are inside the output and written by this block's task only.
        unsafe {
            gemm::gemm(
                rows,
                d,
                seen,
                out.at(self.dst),
                1,
                self.stride as isize,
                false,
                scores.as_ptr(),
                1,
                seen as isize,
                values.data.as_ptr().add(values.offset),
                1,
                values.row_stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The additive causal mask `[B, 1, T, S]` of the last `t` of `key_mask`'s positions: key
    /// `j` open to query `i` iff it is real, `j ≤ i` and (with a window `w`) fewer than `w` real
    /// tokens lie between them; blocked entries −1e30.
    fn attention_bias(key_mask: &[Vec<u8>], t: usize, window: Option<usize>, device: &Device) -> Tensor {
        let s = key_mask[0].len();
        let mut values = Vec::new();
        for row in key_mask {
            let before: Vec<usize> =
                row.iter().scan(0, |n, &r| Some(std::mem::replace(n, *n + usize::from(r)))).collect();
            for i in s - t..s {
                for (j, &real) in row.iter().enumerate() {
                    let open = real != 0 && j <= i && window.is_none_or(|w| before[i] - before[j] < w);
                    values.push(if open { 0f32 } else { -1e30 });
                }
            }
        }
        Tensor::from_vec(values, (key_mask.len(), 1, t, s), device).unwrap()
    }

    /// The candle-ops attention the fused op replaces (as `model::ops::attention` runs it elsewhere).
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
        let (b, heads, t, d) = q.dims4().unwrap();
        let n_rep = heads / k.dim(1).unwrap();
        let k = k.unsqueeze(2).unwrap().repeat((1, 1, n_rep, 1, 1)).unwrap().flatten(1, 2).unwrap();
        let v = v.unsqueeze(2).unwrap().repeat((1, 1, n_rep, 1, 1)).unwrap().flatten(1, 2).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap().broadcast_add(mask).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, t, heads * d)).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_attention_matches_candle_ops_with_padding_windows_blocks_and_a_cache_view() {
        let device = Device::Cpu;
        // Left padding in row 1; 70 queries span two query blocks; past tokens (a cache); decode
        // steps (one query per head) with 3 and with 70 query heads per key/value head.
        let cases =
            [(0, 70, None, 6, 2), (2, 3, None, 6, 2), (5, 1, None, 6, 2), (4, 1, None, 70, 1), (0, 70, Some(16), 6, 2)];
        for (past, t, window, heads, kv_heads) in cases {
            let (b, d, s) = (2, 8, past + t);
            let key_mask: Vec<Vec<u8>> = vec![vec![1; s], (0..s).map(|j| u8::from(j >= 3.min(s - 1))).collect()];
            let mask = attention_bias(&key_mask, t, window, &device);
            let q = Tensor::randn(0f32, 1.0, (b, heads, t, d), &device).unwrap();
            // Keys and values as views of a larger cache buffer (capacity s + 4).
            let cache = |seed: f32| {
                (Tensor::randn(0f32, 1.0, (b, kv_heads, s + 4, d), &device).unwrap() * f64::from(seed))
                    .unwrap()
                    .narrow(2, 0, s)
                    .unwrap()
            };
            let (k, v) = (cache(1.0), cache(2.0));
            assert!(!k.is_contiguous());
            let fused = fused(&q, &k, &v, &mask, 0.35).unwrap().expect("fits");
            let want = reference(&q, &k.contiguous().unwrap(), &v.contiguous().unwrap(), &mask, 0.35);
            assert_eq!(fused.dims(), want.dims());
            // Real queries only: a padding query sees no key, and its output is never read.
            for (row, keys) in key_mask.iter().enumerate() {
                for query in (0..t).filter(|&i| keys[past + i] == 1) {
                    let at = |x: &Tensor| x.narrow(0, row, 1).unwrap().narrow(1, query, 1).unwrap();
                    let diff = max_diff(&at(&fused), &at(&want));
                    assert!(
                        diff < 1e-5,
                        "past {past}, t {t}, window {window:?}, row {row}, query {query}: off by {diff}"
                    );
                }
            }
        }
    }

    #[test]
    fn inputs_that_do_not_fit_are_left_to_candle_ops() {
        let device = Device::Cpu;
        let q = Tensor::zeros((1, 2, 3, 4), DType::F32, &device).unwrap();
        let k = Tensor::zeros((1, 1, 3, 4), DType::F32, &device).unwrap();
        let mask = Tensor::zeros((1, 1, 3, 3), DType::F32, &device).unwrap();
        assert!(fused(&q, &k, &k, &mask, 1.0).unwrap().is_some());
        let half = q.to_dtype(DType::F16).unwrap();
        assert!(fused(&half, &k, &k, &mask, 1.0).unwrap().is_none(), "f16");
        let k3 = Tensor::zeros((1, 3, 3, 4), DType::F32, &device).unwrap();
        assert!(fused(&q, &k3, &k3, &mask, 1.0).unwrap().is_none(), "heads not a multiple of kv heads");
        let wide = Tensor::zeros((1, 1, 3, 5), DType::F32, &device).unwrap();
        assert!(fused(&q, &k, &k, &wide, 1.0).unwrap().is_none(), "mask shape");
    }
}
