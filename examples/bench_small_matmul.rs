//! `x · Wᵀ` for few rows of `x`: scalpel's small-matmul kernel against candle's matmul (gemm),
//! on the linear shapes of Qwen2.5-Coder-0.5B (fused qkv, o_proj, fused gate/up, down, LM head;
//! `SHAPES=smollm2` for SmolLM2-135M's), for several row counts, f32, the best of REPEATS runs
//! each (and, where the CPU has them, the panel product of the same weights,
//! `scalpel::kernels::panels`, and the AMX product of the weights rounded to bf16,
//! `scalpel::kernels::amx`); then a whole decode step's products (every layer's distinct weights
//! and the LM head, 0.5–2 GB, so they stream from memory as in generation).
//!
//! `cargo run --release --example bench_small_matmul -- [ROWS,ROWS,..] [REPEATS]`

use candle_core::{DType, Device, Tensor};
use scalpel::kernels::isa::Isa;
use scalpel::kernels::small_matmul::matmul_wt;
use scalpel::kernels::{amx, panels};
use std::time::Instant;

/// `(k, n, W as a Vec, W as a tensor)`.
type Weight = (usize, usize, Vec<f32>, Tensor);

fn best(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: Vec<usize> = match args.first() {
        Some(list) => list.split(',').map(|r| r.parse()).collect::<Result<_, _>>()?,
        None => vec![1, 4, 8, 16, 24, 32, 48, 64],
    };
    let repeats: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let isa = Isa::detect();
    // SHAPES=smollm2 takes SmolLM2-135M's shapes (30 layers) instead of Qwen2.5-Coder-0.5B's (24).
    let (shapes, layers) = if std::env::var("SHAPES").is_ok_and(|s| s == "smollm2") {
        (
            [
                ("qkv", 576, 960),
                ("o_proj", 576, 576),
                ("gate_up", 576, 3072),
                ("down", 1536, 576),
                ("lm_head", 576, 49152),
            ],
            30,
        )
    } else {
        (
            [
                ("qkv", 896, 1152),
                ("o_proj", 896, 896),
                ("gate_up", 896, 9728),
                ("down", 4864, 896),
                ("lm_head", 896, 151936),
            ],
            24,
        )
    };
    let (hidden, inter) = (shapes[0].1, shapes[3].1);
    println!("kernel {isa:?}; ms per product, best of {repeats} (GFLOP/s)");
    for (name, k, n) in shapes {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let packed = amx::PackedRows::pack(&w.to_dtype(DType::BF16)?)?;
        let in_panels = panels::Panels::pack(&w)?;
        for &m in &rows {
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let flop = 2.0 * (m * k * n) as f64 * 1e-9;
            let ours = best(repeats, || {
                std::hint::black_box(matmul_wt(isa, &xv, &wv, None, m, k, n));
            });
            let wt = w.t()?;
            let candle = best(repeats, || {
                std::hint::black_box(x.matmul(&wt).unwrap());
            });
            // An optional column: `label`, time and rate of `product` where it applies.
            let column = |label: &str, product: Option<Box<dyn Fn() + '_>>| match product {
                Some(f) => {
                    let t = best(repeats, f);
                    format!("  {label} {:8.2} ms ({:5.1})", t * 1e3, flop / t)
                }
                None => String::new(),
            };
            let amx = column(
                "amx",
                packed.as_ref().map(|p| -> Box<dyn Fn()> {
                    Box::new(|| drop(std::hint::black_box(amx::linear(&x, p, None).unwrap())))
                }),
            );
            let in_panels = column(
                "panels",
                in_panels.as_ref().map(|p| -> Box<dyn Fn()> {
                    Box::new(|| drop(std::hint::black_box(panels::linear(&x, p, None).unwrap())))
                }),
            );
            println!(
                "{name:8} k {k:5} n {n:6} m {m:3}: small {:8.2} ms ({:5.1})  candle {:8.2} ms ({:5.1})  {:.2}x{in_panels}{amx}",
                ours * 1e3,
                flop / ours,
                candle * 1e3,
                flop / candle,
                candle / ours
            );
        }
    }
    println!("decode step ({layers} layers + LM head, distinct weights), ms per step, best of {repeats}");
    let layer_shapes = &shapes[..4];
    let weights: Vec<Vec<Weight>> = (0..layers)
        .map(|_| {
            layer_shapes
                .iter()
                .map(|&(_, k, n)| {
                    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
                    Ok((k, n, w.flatten_all()?.to_vec1::<f32>()?, w))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .chain(std::iter::once(Ok(vec![{
            let (k, n) = (shapes[4].1, shapes[4].2);
            let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
            (k, n, w.flatten_all()?.to_vec1::<f32>()?, w)
        }])))
        .collect::<anyhow::Result<_>>()?;
    // The same weights in panels (where they apply), each with its `k`.
    let step_panels: Option<Vec<(usize, panels::Panels)>> = weights
        .iter()
        .flatten()
        .map(|(k, _, _, w)| Ok(panels::Panels::pack(w)?.map(|p| (*k, p))))
        .collect::<anyhow::Result<_>>()?;
    for &m in &rows {
        let xs: Vec<(Vec<f32>, Tensor)> = [hidden, inter]
            .iter()
            .map(|&k| {
                let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
                Ok((x.flatten_all()?.to_vec1::<f32>()?, x))
            })
            .collect::<anyhow::Result<_>>()?;
        let x_for = |k: usize| &xs[usize::from(k != hidden)];
        let ours = best(repeats, || {
            for layer in &weights {
                for (k, n, wv, _) in layer {
                    std::hint::black_box(matmul_wt(isa, &x_for(*k).0, wv, None, m, *k, *n));
                }
            }
        });
        let candle = best(repeats, || {
            for layer in &weights {
                for (k, _, _, w) in layer {
                    std::hint::black_box(x_for(*k).1.matmul(&w.t().unwrap()).unwrap());
                }
            }
        });
        let in_panels = match &step_panels {
            Some(step) => {
                let t = best(repeats, || {
                    for (k, p) in step {
                        std::hint::black_box(panels::linear(&x_for(*k).1, p, None).unwrap());
                    }
                });
                format!("  panels {:8.1} ms", t * 1e3)
            }
            None => String::new(),
        };
        println!(
            "m {m:3}: small {:8.1} ms  candle {:8.1} ms  {:.2}x{in_panels}",
            ours * 1e3,
            candle * 1e3,
            candle / ours
        );
    }
    Ok(())
}
