//! Which packed kernels a model's weights may be prepared for.

use super::isa;

/// The packed CPU kernels the loader may prepare weights for, each where the CPU has it: AMX
/// tiles for weights exact in bf16, AVX-512 panels for f32 weights. Both allowed by default;
/// with neither, every matrix stays row-major (the few-rows kernel, gemm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelConfig {
    /// Whether weights exact in bf16 may be tile-packed for the AMX products.
    pub amx: bool,
    /// Whether f32 weights may be kept in AVX-512 panels.
    pub panels: bool,
}

impl KernelConfig {
    /// Every packed kernel the CPU has (the default).
    pub const AUTO: KernelConfig = KernelConfig { amx: true, panels: true };
    /// Row-major weights only.
    pub const ROWS: KernelConfig = KernelConfig { amx: false, panels: false };
    /// Panels where the CPU has AVX-512, no AMX.
    pub const PANELS: KernelConfig = KernelConfig { amx: false, panels: true };
    /// AMX where the CPU has it, the other matrices row-major.
    pub const AMX: KernelConfig = KernelConfig { amx: true, panels: false };

    /// Whether AMX products are allowed and this CPU (and operating system) gives them.
    pub fn uses_amx(self) -> bool {
        self.amx && isa::has_amx()
    }

    /// Whether panels are allowed and this CPU has AVX-512F.
    pub fn uses_panels(self) -> bool {
        self.panels && isa::has_avx512f()
    }
}

impl Default for KernelConfig {
    fn default() -> KernelConfig {
        KernelConfig::AUTO
    }
}
