//! The instrumented decoder: one config-driven implementation of every supported family over
//! candle ops, with an explicit per-layer loop, named hook points, capture of chosen points and
//! positions, runtime interventions, a KV cache, sampling and generation.

mod decoder;
mod edit;
mod generate;
pub mod hooks;
pub mod interventions;
mod layer;
mod layer_major;
pub mod masks;
pub mod memory;
mod moe;
mod ops;
mod per_layer;
mod prefill;
pub(crate) mod rope;
mod sampling;
mod weights;
pub use weights::{WeightLayout, WeightStorage, WEIGHTS_DTYPE_ENV};

pub use crate::kernels::KernelConfig;
pub use decoder::{log_probs, Decoder, ForwardOutput, ForwardRequest, KvCache, LoadOptions, LogitsMode};
pub use edit::WriterTensor;
pub use generate::{generate, GenerateOptions, Generation};
pub use hooks::{CaptureSpec, Captures, HookPoint, Routes};
pub use interventions::{basis_tensor, Intervention, Interventions};
pub use layer_major::LayerMajor;
pub use prefill::{prefill, shares_prefix, Prefilled, MIN_SHARED_PREFIX};
pub use sampling::{argmax, Sampler, Sampling};

use crate::{Error, Result};
use candle_core::{DType, Device};

/// Parse a compute dtype name (`f32`, `bf16`, `f16`).
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::Invalid(format!("unknown dtype `{other}` (choose f32, bf16 or f16)"))),
    }
}

/// The device named `name`: `cpu`, `cuda` (or `cuda:N` for GPU N), `metal` (or `metal:N`), or
/// `auto` for [`default_device`]. A GPU backend this binary was built without is a clear error.
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((kind, n)) => {
            let n = n.parse::<usize>().map_err(|_| Error::Invalid(format!("bad device ordinal in `{name}`")))?;
            (kind, n)
        }
        None => (name, 0),
    };
    let unavailable = |feature: &str, e: String| {
        Error::Invalid(format!("device `{name}` is not available ({e}); scalpel needs to be built with `--features {feature}` and a working {feature} GPU"))
    };
    match kind {
        "auto" => Ok(default_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if cfg!(feature = "cuda") {
                Device::new_cuda(ordinal).map_err(|e| unavailable("cuda", e.to_string()))
            } else {
                Err(unavailable("cuda", "this binary was built without CUDA support".into()))
            }
        }
        "metal" => {
            if cfg!(feature = "metal") {
                Device::new_metal(ordinal).map_err(|e| unavailable("metal", e.to_string()))
            } else {
                Err(unavailable("metal", "this binary was built without Metal support".into()))
            }
        }
        other => Err(Error::Invalid(format!("unknown device `{other}` (choose auto, cpu, cuda, cuda:N, metal)"))),
    }
}

/// The best available device: CUDA or Metal when compiled in and present, else the CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}
