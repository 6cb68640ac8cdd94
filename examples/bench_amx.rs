//! The lead for decode products beyond the f32 FMA rate: Intel AMX (`amx_bf16`), measured.
//!
//! A bf16 checkpoint's weights are exact in bf16; an f32 activation row splits exactly enough
//! into three bf16 parts (`x ≈ hi + mid + lo`, 24 mantissa bits), so three AMX products
//! (`tdpbf16ps`, f32 accumulation) give `W·x` to f32 accuracy. This prints the error of one
//! 16 × 16 tile against an f64 reference, then the single-thread throughput of `W·xᵀ` for 16 rows
//! of `x`, with `W` row-major as stored (each tile load gathers 16 rows at the matrix's stride)
//! and in a tile-blocked layout (each tile's 16 × 32 values contiguous).
//!
//! Each product runs three row blocks at a time (three accumulator tiles take turns), on one
//! thread and on two (each a share of the output rows).
//!
//! `cargo run --release --example bench_amx -- [OUT_ROWS] [IN]` (default 28800 × 896: 52 MB of
//! bf16 weights, beyond the caches). Linux on x86-64 with AMX only; elsewhere it says so.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use half::bf16;
    use std::arch::asm;
    use std::time::Instant;

    /// All eight tiles as 16 rows of 64 bytes (the library's configuration, once per thread).
    fn configure() {
        scalpel::kernels::amx::configure_thread();
    }

    /// Where tile (row block `r`, column block `c`) of `w` (`[n, k]`) starts, and the stride of
    /// its rows in bytes.
    fn tile(w: &[bf16], k: usize, blocked: bool, r: usize, c: usize) -> (*const bf16, isize) {
        if blocked {
            (w[(r * (k / 32) + c) * 512..].as_ptr(), 64)
        } else {
            (w[r * 16 * k + c * 32..].as_ptr(), (k * 2) as isize)
        }
    }

    /// `C[w row][x row]` for the 16 × 16 tile of rows `[16r, 16r + 16)` of `w`.
    fn one_tile(w: &[bf16], k: usize, parts: &[Vec<bf16>; 3], r: usize) -> [f32; 256] {
        let mut c = [0f32; 256];
        // SAFETY: AMX was granted and configured; every load stays inside `w` and `parts`.
        unsafe {
            asm!("tilezero tmm0");
            for kb in 0..k / 32 {
                for part in parts {
                    let (a, stride) = tile(w, k, false, r, kb);
                    asm!("tileloadd tmm2, [{a} + {s}*1]", "tileloadd tmm4, [{b} + {bs}*1]", "tdpbf16ps tmm0, tmm2, tmm4",
                        a = in(reg) a, s = in(reg) stride, b = in(reg) part[kb * 512..].as_ptr(), bs = in(reg) 64isize);
                }
            }
            asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) c.as_mut_ptr(), s = in(reg) 64isize);
        }
        c
    }

    /// Rows `[48g, 48g + 48)` of `w` times the 16 rows of `x` (three parts) for every group `g`
    /// in `groups`: three row blocks at a time, so that three accumulator tiles take turns (one
    /// tile's products depend on each other; three chains keep the unit busy).
    fn product(
        w: &[bf16],
        k: usize,
        parts: &[Vec<bf16>; 3],
        blocked: bool,
        groups: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        configure();
        for (g, out) in groups.zip(out.chunks_mut(3 * 256)) {
            let r = 3 * g;
            // SAFETY: as in `one_tile`; `out` holds this group's 3 × 256 values.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2");
                for kb in 0..k / 32 {
                    let (a0, s) = tile(w, k, blocked, r, kb);
                    let (a1, a2) = (tile(w, k, blocked, r + 1, kb).0, tile(w, k, blocked, r + 2, kb).0);
                    asm!(
                        "tileloadd tmm3, [{a0} + {s}*1]",
                        "tileloadd tmm4, [{a1} + {s}*1]",
                        "tileloadd tmm5, [{a2} + {s}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tileloadd tmm7, [{b1} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tileloadd tmm6, [{b2} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm7",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm7",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        a0 = in(reg) a0, a1 = in(reg) a1, a2 = in(reg) a2, s = in(reg) s,
                        b0 = in(reg) parts[0][kb * 512..].as_ptr(), b1 = in(reg) parts[1][kb * 512..].as_ptr(),
                        b2 = in(reg) parts[2][kb * 512..].as_ptr(), bs = in(reg) 64isize,
                    );
                }
                let p = out.as_mut_ptr();
                asm!("tilestored [{p} + {s}*1], tmm0", "tilestored [{q} + {s}*1], tmm1", "tilestored [{t} + {s}*1], tmm2",
                    p = in(reg) p, q = in(reg) p.add(256), t = in(reg) p.add(512), s = in(reg) 64isize);
            }
        }
    }

    pub fn run(n: usize, k: usize) {
        // The CPU's AMX-BF16 and Linux's grant of the tile state, as the products ask for them.
        if !scalpel::kernels::isa::has_amx() {
            println!("this CPU or kernel gives no AMX bf16");
            return;
        }
        assert!(n.is_multiple_of(96) && k.is_multiple_of(32), "OUT_ROWS must be a multiple of 96, IN of 32");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        let w: Vec<bf16> = (0..n * k).map(|_| bf16::from_f32(random())).collect();
        let x: Vec<f32> = (0..16 * k).map(|_| random()).collect();
        // The parts in AMX's pair layout: part[(kk / 2) · 32 + row · 2 + kk % 2].
        let mut parts = [vec![bf16::ZERO; 16 * k], vec![bf16::ZERO; 16 * k], vec![bf16::ZERO; 16 * k]];
        for row in 0..16 {
            for kk in 0..k {
                let mut rest = x[row * k + kk];
                for part in &mut parts {
                    let p = bf16::from_f32(rest);
                    part[(kk / 2) * 32 + row * 2 + kk % 2] = p;
                    rest -= p.to_f32();
                }
            }
        }
        configure();
        let c = one_tile(&w, k, &parts, 0);
        let mut worst = 0f64;
        for r in 0..16 {
            for j in 0..16 {
                let terms = (0..k).map(|kk| w[r * k + kk].to_f64() * f64::from(x[j * k + kk]));
                let (exact, size) = terms.fold((0f64, 0f64), |(s, a), t| (s + t, a + t.abs()));
                worst = worst.max((f64::from(c[r * 16 + j]) - exact).abs() / size);
            }
        }
        println!("one tile, three parts: largest |error| / Σ|terms| = {worst:.1e} (f32 rounding is ~6e-8)");
        let blocked: Vec<bf16> = {
            let mut b = vec![bf16::ZERO; n * k];
            for r in 0..n / 16 {
                for kb in 0..k / 32 {
                    for i in 0..16 {
                        let at = (r * (k / 32) + kb) * 512 + i * 32;
                        b[at..at + 32].copy_from_slice(&w[(r * 16 + i) * k + kb * 32..][..32]);
                    }
                }
            }
            b
        };
        let mut out = vec![0f32; n * 16];
        let groups = n / 48;
        for (name, weights, is_blocked) in [("row-major", &w, false), ("tile-blocked", &blocked, true)] {
            for threads in [1, 2] {
                let reps = (2_000_000_000 / (n * k)).max(1);
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let started = Instant::now();
                    for _ in 0..reps {
                        let share = groups.div_ceil(threads);
                        let parts = &parts;
                        std::thread::scope(|scope| {
                            for (t, out) in out.chunks_mut(share * 3 * 256).enumerate() {
                                let range = t * share..((t + 1) * share).min(groups);
                                scope.spawn(move || product(weights, k, parts, is_blocked, range, out));
                            }
                        });
                    }
                    best = best.min(started.elapsed().as_secs_f64() / reps as f64);
                }
                println!(
                    "{name}, {threads} thread(s): {:.2} ms per product of {} MB of bf16 weights with 16 rows: \
                     {:.1} GB/s of weights, {:.0} GFLOP/s counted as f32 work (three AMX products each)",
                    best * 1e3,
                    n * k * 2 / 1_000_000,
                    (n * k * 2) as f64 / best / 1e9,
                    2.0 * (n * k * 16) as f64 / best / 1e9
                );
            }
        }
    }
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    amx::run(arg(1, 28800), arg(2, 896));
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    println!("AMX is an x86-64 feature; this benchmark runs on Linux only ({} × {} asked)", arg(1, 0), arg(2, 0));
}
