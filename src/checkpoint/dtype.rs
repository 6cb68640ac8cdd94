//! Conversions between stored tensor bytes and f32 for the dtypes scalpel edits.

use crate::{Error, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;

/// A floating-point dtype that scalpel can read and rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditableDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

impl EditableDtype {
    /// The editable dtype for a safetensors dtype, or an error naming the tensor.
    pub fn of(dtype: Dtype, tensor: &str) -> Result<EditableDtype> {
        match dtype {
            Dtype::F32 => Ok(EditableDtype::F32),
            Dtype::F16 => Ok(EditableDtype::F16),
            Dtype::BF16 => Ok(EditableDtype::BF16),
            other => Err(Error::bad_tensor(
                tensor,
                format!("dtype {other:?} is not supported (scalpel reads and edits F32, F16 and BF16)"),
            )),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            EditableDtype::F32 => 4,
            EditableDtype::F16 | EditableDtype::BF16 => 2,
        }
    }
}

const CHUNK: usize = 1 << 16;

/// Decode little-endian tensor bytes to f32.
pub fn decode_f32(dtype: Dtype, bytes: &[u8], tensor: &str) -> Result<Vec<f32>> {
    let dtype = EditableDtype::of(dtype, tensor)?;
    let size = dtype.size();
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::bad_tensor(tensor, format!("{} bytes is not a whole number of elements", bytes.len())));
    }
    let mut out = vec![0f32; bytes.len() / size];
    out.par_chunks_mut(CHUNK).zip(bytes.par_chunks(CHUNK * size)).for_each(|(dst, src)| {
        let elems = src.chunks_exact(size);
        match dtype {
            EditableDtype::F32 => dst.iter_mut().zip(elems).for_each(|(d, s)| {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }),
            EditableDtype::F16 => dst.iter_mut().zip(elems).for_each(|(d, s)| {
                *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
            }),
            EditableDtype::BF16 => dst.iter_mut().zip(elems).for_each(|(d, s)| {
                *d = bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }),
        }
    });
    Ok(out)
}

/// Encode f32 values to little-endian bytes of `dtype`, rounding to nearest (ties to even).
pub fn encode_f32(dtype: EditableDtype, values: &[f32]) -> Vec<u8> {
    let size = dtype.size();
    let mut out = vec![0u8; values.len() * size];
    out.par_chunks_mut(CHUNK * size).zip(values.par_chunks(CHUNK)).for_each(|(dst, src)| {
        let slots = dst.chunks_exact_mut(size);
        match dtype {
            EditableDtype::F32 => slots.zip(src).for_each(|(d, v)| d.copy_from_slice(&v.to_le_bytes())),
            EditableDtype::F16 => slots.zip(src).for_each(|(d, v)| d.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            EditableDtype::BF16 => {
                slots.zip(src).for_each(|(d, v)| d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes()))
            }
        }
    });
    out
}

/// The relative rounding error of one value stored in `dtype` (half an ulp at 1.0).
pub fn unit_roundoff(dtype: EditableDtype) -> f64 {
    match dtype {
        EditableDtype::F32 => f64::from(f32::EPSILON) / 2.0,
        EditableDtype::F16 => f64::from(f16::EPSILON.to_f32()) / 2.0,
        EditableDtype::BF16 => f64::from(bf16::EPSILON.to_f32()) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_dtype_to_its_precision() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0137).collect();
        for (dtype, st) in
            [(EditableDtype::F32, Dtype::F32), (EditableDtype::F16, Dtype::F16), (EditableDtype::BF16, Dtype::BF16)]
        {
            let bytes = encode_f32(dtype, &values);
            assert_eq!(bytes.len(), values.len() * dtype.size());
            let back = decode_f32(st, &bytes, "t").unwrap();
            for (a, b) in values.iter().zip(&back) {
                let tol = unit_roundoff(dtype) * f64::from(a.abs()) * 1.0001;
                assert!(f64::from((a - b).abs()) <= tol, "{dtype:?}: {a} vs {b}");
            }
            // Encoding what was decoded is exact: rounding happens once.
            assert_eq!(encode_f32(dtype, &back), bytes);
        }
    }

    #[test]
    fn refuses_integer_dtypes_naming_the_tensor() {
        let err = decode_f32(Dtype::I8, &[0, 1], "model.x").unwrap_err().to_string();
        assert!(err.contains("model.x") && err.contains("I8"), "{err}");
    }
}
