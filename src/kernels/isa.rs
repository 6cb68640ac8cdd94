//! The instruction sets of this CPU that the kernels use.

use std::sync::OnceLock;

/// Which kernel computes the dot products of the few-rows product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F, 16 lanes, 4 × 4 tiles.
    Avx512,
    /// AVX2 with FMA (and F16C for f16 weights), 8 lanes, 3 × 4 tiles.
    Avx2,
    /// Plain Rust (no FMA), 8 lanes in arrays.
    Portable,
}

impl Isa {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2].into_iter().find(|isa| isa.available()).unwrap_or(Isa::Portable)
    }

    /// Whether this CPU runs this kernel.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Whether the CPU has AVX-512F (the panel products, the vectorized SiLU).
pub fn has_avx512f() -> bool {
    Isa::Avx512.available()
}

/// Whether the CPU has AMX-TILE and AMX-BF16 and the operating system granted this process the
/// tile state (asked once: the grant is the process's).
pub fn has_amx() -> bool {
    static GRANTED: OnceLock<bool> = OnceLock::new();
    *GRANTED.get_or_init(super::amx::request_tiles)
}
