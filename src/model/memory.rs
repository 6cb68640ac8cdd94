//! How much memory a run may use, how much a model needs in memory, and the choice between the
//! whole-model path and the layer-major path ([`super::LayerMajor`]) that follows from them.

use super::weights::WeightStorage;
use crate::checkpoint::ModelDir;
use crate::{Error, Result};
use candle_core::{DType, Device};
use std::path::Path;

/// Environment variable that replaces the detected memory budget (bytes, or with a suffix:
/// `512M`, `24G`, `1.5GiB`); for tests and for users who want to leave room to other programs.
pub const BUDGET_ENV: &str = "SCALPEL_MEMORY_BUDGET";

/// The memory a run may use and where that figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBudget {
    /// Bytes.
    pub bytes: u64,
    /// Which limit gave it, e.g. `MemAvailable` or `cgroup memory.max`.
    pub source: String,
}

/// Which forward path a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePath {
    /// Load every weight, run each batch through all layers.
    WholeModel,
    /// Load one layer at a time and run every batch through it.
    LayerMajor,
}

/// The path chosen and why, in words for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct PathChoice {
    /// The path.
    pub path: CapturePath,
    /// Why.
    pub reason: String,
}

/// Parse a byte count: a plain number, or one with a suffix K/M/G/T (powers of 1000) or
/// KiB/MiB/GiB/TiB (powers of 1024); `B` is optional.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || Error::Invalid(format!("`{text}` is not a byte count (e.g. 2000000000, 512M, 24G, 1.5GiB)"));
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim().to_ascii_lowercase().trim_end_matches('b') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024f64.powi(2),
        "gi" => 1024f64.powi(3),
        "ti" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok((value * scale) as u64)
}

/// Bytes as `12.3 GB` (powers of 1000, as the README's sizes).
pub fn format_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// The memory this process may use: [`BUDGET_ENV`] if set, else the smallest of the system's
/// `MemAvailable` (/proc/meminfo), the cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) and the data-segment limit (`ulimit -d`, which covers anonymous
/// memory). `None` where none of these can be read (not Linux).
pub fn memory_budget() -> Result<Option<MemoryBudget>> {
    if let Ok(value) = std::env::var(BUDGET_ENV) {
        let bytes = parse_bytes(&value).map_err(|e| Error::Invalid(format!("{BUDGET_ENV}: {e}")))?;
        return Ok(Some(MemoryBudget { bytes, source: BUDGET_ENV.into() }));
    }
    let mut limits: Vec<MemoryBudget> = Vec::new();
    if let Some(kb) = read(Path::new("/proc/meminfo")).and_then(|t| meminfo_kb(&t, "MemAvailable")) {
        limits.push(MemoryBudget { bytes: kb * 1024, source: "MemAvailable".into() });
    }
    limits.extend(cgroup_limit());
    if let Some(bytes) = read(Path::new("/proc/self/limits")).and_then(|t| data_limit(&t)) {
        limits.push(MemoryBudget { bytes, source: "ulimit -d (data segment)".into() });
    }
    Ok(limits.into_iter().min_by_key(|l| l.bytes))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A `Key:   123 kB` field of /proc/meminfo, in kB.
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The soft `Max data size` of /proc/self/limits, if limited.
fn data_limit(text: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix("Max data size"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The memory limit of this process's cgroup (v2 or v1), if one is set.
fn cgroup_limit() -> Option<MemoryBudget> {
    let membership = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let mut candidates: Vec<(String, &str)> = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            candidates.push((format!("/sys/fs/cgroup{path}/memory.max"), "cgroup memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates
                .push((format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"), "cgroup memory.limit_in_bytes"));
        }
    }
    candidates.push(("/sys/fs/cgroup/memory.max".into(), "cgroup memory.max"));
    candidates.push(("/sys/fs/cgroup/memory/memory.limit_in_bytes".into(), "cgroup memory.limit_in_bytes"));
    candidates.into_iter().find_map(|(path, source)| {
        let bytes: u64 = read(Path::new(&path))?.trim().parse().ok()?;
        // v1 reports "no limit" as a huge page-rounded number.
        (bytes < 1 << 60).then(|| MemoryBudget { bytes, source: source.into() })
    })
}

/// The bytes `model`'s weights take in memory on `device` in the compute dtype `dtype` (every
/// tensor of the checkpoint; matrices in the dtype `storage` keeps them in, the rest at the
/// compute dtype's element size).
pub fn model_memory_bytes(model: &ModelDir, dtype: DType, storage: WeightStorage, device: &Device) -> Result<u64> {
    let checkpoint = &model.checkpoint;
    let mut total = 0u64;
    for name in checkpoint.names() {
        let view = checkpoint.tensor(name)?;
        let stored = match view.dtype {
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F16 => DType::F16,
            _ => dtype,
        };
        let kept = if view.shape.len() == 2 { storage.matrix_dtype(stored, dtype, device) } else { dtype };
        total += view.numel() as u64 * kept.size_in_bytes() as u64;
    }
    Ok(total)
}

/// How [`WeightStorage::Auto`] resolves when the weights take `compute_bytes` in the compute
/// dtype: [`WeightStorage::Compute`] (faster for large batches) when that plus half again (for
/// activations, the KV cache and a search's edited matrices) fits `budget` or the budget is
/// unknown, else [`WeightStorage::Checkpoint`] (16-bit matrices: half the memory, the same
/// results). Other choices are kept.
pub fn storage_for(storage: WeightStorage, compute_bytes: u64, budget: Option<&MemoryBudget>) -> WeightStorage {
    match (storage, budget) {
        (WeightStorage::Auto, Some(b)) if compute_bytes.saturating_add(compute_bytes / 2) > b.bytes => {
            WeightStorage::Checkpoint
        }
        (WeightStorage::Auto, _) => WeightStorage::Compute,
        (chosen, _) => chosen,
    }
}

/// [`storage_for`] with `model`'s size in the compute dtype and the detected [`memory_budget`]
/// (read only when `storage` is [`WeightStorage::Auto`]).
pub fn resolve_storage(
    storage: WeightStorage,
    model: &ModelDir,
    dtype: DType,
    device: &Device,
) -> Result<WeightStorage> {
    if storage != WeightStorage::Auto {
        return Ok(storage);
    }
    let compute_bytes = model_memory_bytes(model, dtype, WeightStorage::Compute, device)?;
    Ok(storage_for(storage, compute_bytes, memory_budget()?.as_ref()))
}

/// Choose the capture path: `force` if given (`--layer-major` / `--no-layer-major`), else the
/// layer-major path when the weights plus a tenth for activations and load-time copies
/// (`model_bytes × 1.1`) exceed `budget`; the whole model when the budget is unknown.
pub fn choose_capture_path(model_bytes: u64, budget: Option<&MemoryBudget>, force: Option<bool>) -> PathChoice {
    let size = format_bytes(model_bytes);
    match (force, budget) {
        (Some(true), _) => {
            PathChoice { path: CapturePath::LayerMajor, reason: format!("--layer-major (the model needs {size})") }
        }
        (Some(false), _) => {
            PathChoice { path: CapturePath::WholeModel, reason: format!("--no-layer-major (the model needs {size})") }
        }
        (None, None) => PathChoice {
            path: CapturePath::WholeModel,
            reason: format!("the model needs {size}; the available memory is unknown"),
        },
        (None, Some(b)) => {
            let needed = model_bytes.saturating_add(model_bytes / 10);
            let (path, verdict) = if needed > b.bytes {
                (CapturePath::LayerMajor, "does not fit")
            } else {
                (CapturePath::WholeModel, "fits")
            };
            PathChoice {
                path,
                reason: format!(
                    "the model needs {size} (+10 % working memory), {} is available ({}): it {verdict}",
                    format_bytes(b.bytes),
                    b.source
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_storage_widens_what_fits_and_keeps_16_bit_what_does_not() {
        let budget = |bytes| MemoryBudget { bytes, source: "test".into() };
        let auto = WeightStorage::Auto;
        assert_eq!(storage_for(auto, 1000, Some(&budget(1500))), WeightStorage::Compute);
        assert_eq!(storage_for(auto, 1000, Some(&budget(1499))), WeightStorage::Checkpoint);
        assert_eq!(storage_for(auto, 1000, None), WeightStorage::Compute, "unknown budget: the faster choice");
        for chosen in [WeightStorage::Compute, WeightStorage::Checkpoint] {
            assert_eq!(storage_for(chosen, 1000, Some(&budget(1))), chosen);
            assert_eq!(storage_for(chosen, 1, Some(&budget(1000))), chosen);
        }
        assert_eq!(WeightStorage::parse("AUTO").unwrap(), WeightStorage::Auto);
        assert_eq!(WeightStorage::default(), WeightStorage::Auto);
    }

    #[test]
    fn byte_counts_parse_with_and_without_units() {
        assert_eq!(parse_bytes("1500").unwrap(), 1500);
        assert_eq!(parse_bytes("512M").unwrap(), 512_000_000);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_bytes("24 GB").unwrap(), 24_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12X").is_err());
    }

    #[test]
    fn proc_files_parse() {
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   12345678 kB\n";
        assert_eq!(meminfo_kb(meminfo, "MemAvailable"), Some(12_345_678));
        assert_eq!(meminfo_kb(meminfo, "MemFree"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max data size             2000000000           unlimited            bytes\n";
        assert_eq!(data_limit(limits), Some(2_000_000_000));
        assert_eq!(data_limit("Max data size             unlimited            unlimited            bytes\n"), None);
    }

    #[test]
    fn a_small_budget_chooses_layer_major_and_flags_win() {
        let small = MemoryBudget { bytes: 1_000_000, source: "test".into() };
        let large = MemoryBudget { bytes: 1 << 40, source: "test".into() };
        assert_eq!(choose_capture_path(10_000_000, Some(&small), None).path, CapturePath::LayerMajor);
        assert_eq!(choose_capture_path(10_000_000, Some(&large), None).path, CapturePath::WholeModel);
        // Within 10 % of the budget is too close.
        assert_eq!(choose_capture_path(950_000, Some(&small), None).path, CapturePath::LayerMajor);
        assert_eq!(choose_capture_path(10_000_000, Some(&small), Some(false)).path, CapturePath::WholeModel);
        assert_eq!(choose_capture_path(10, Some(&large), Some(true)).path, CapturePath::LayerMajor);
        assert_eq!(choose_capture_path(10, None, None).path, CapturePath::WholeModel);
        assert!(choose_capture_path(10_000_000, Some(&small), None).reason.contains("does not fit"));
    }
}
