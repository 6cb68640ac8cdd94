//! Runtime interventions at hook points: directional ablation, activation addition and
//! angular steering (rotation in a plane). Formulas from DESIGN.md.

use super::hooks::HookPoint;
use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;

/// One intervention.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// `h ← h − Q (Qᵀ h)` at `points` of the layers that have a basis (`[k, hidden]`,
    /// orthonormal rows, f32). [`HookPoint::FinalNorm`] uses the key `num_layers`.
    Ablate {
        /// Where.
        points: Vec<HookPoint>,
        /// Layer → basis.
        bases: BTreeMap<usize, Tensor>,
    },
    /// `h ← h + α r` at one point of the given layers.
    Add {
        /// Where.
        point: HookPoint,
        /// Which layers.
        layers: Vec<usize>,
        /// `r` (`[hidden]`, f32).
        vector: Tensor,
        /// `α`.
        alpha: f64,
    },
    /// `h ← h − P h + ‖P h‖ (cos θ · b1 + sin θ · b2)` with `P = b1 b1ᵀ + b2 b2ᵀ`
    /// (orthonormal `b1`, `b2`); adaptive: only rows with `h · b1 > 0`.
    Rotate {
        /// Where.
        point: HookPoint,
        /// Which layers.
        layers: Vec<usize>,
        /// First plane vector (`[hidden]`, f32, unit).
        b1: Tensor,
        /// Second plane vector, orthogonal to `b1`.
        b2: Tensor,
        /// θ in radians.
        angle: f64,
        /// Rotate only where `h · b1 > 0`.
        adaptive: bool,
    },
}

/// A list of interventions, applied in order at each hook point.
#[derive(Debug, Clone, Default)]
pub struct Interventions {
    /// The interventions.
    pub items: Vec<Intervention>,
}

/// Orthonormalize rows of `vectors` (Gram–Schmidt in f64) into a `[k, hidden]` f32 tensor.
pub fn basis_tensor(vectors: &[Vec<f32>], device: &Device) -> crate::Result<Tensor> {
    let basis = crate::linalg::Basis::orthonormal(vectors)?;
    let flat: Vec<f32> = basis.rows().iter().flatten().map(|&x| x as f32).collect();
    Ok(Tensor::from_vec(flat, (basis.k(), basis.hidden()), device)?)
}

impl Interventions {
    /// No interventions.
    pub fn none() -> Interventions {
        Interventions::default()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Directional ablation of one basis at every layer and `points`.
    pub fn ablate_everywhere(basis: Tensor, num_layers: usize, points: &[HookPoint]) -> Interventions {
        let bases = (0..=num_layers).map(|l| (l, basis.clone())).collect();
        Interventions { items: vec![Intervention::Ablate { points: points.to_vec(), bases }] }
    }

    /// Whether anything acts at `point` of `layer`.
    pub fn acts_at(&self, point: HookPoint, layer: usize) -> bool {
        self.items.iter().any(|i| match i {
            Intervention::Ablate { points, bases } => points.contains(&point) && bases.contains_key(&layer),
            Intervention::Add { point: p, layers, .. } | Intervention::Rotate { point: p, layers, .. } => {
                *p == point && layers.contains(&layer)
            }
        })
    }

    /// Apply every intervention registered at `point` of `layer` to `h` (`[..., hidden]`).
    pub fn apply(&self, point: HookPoint, layer: usize, h: Tensor) -> candle_core::Result<Tensor> {
        if !self.acts_at(point, layer) {
            return Ok(h);
        }
        let dtype = h.dtype();
        let mut x = h.to_dtype(DType::F32)?;
        for item in &self.items {
            x = match item {
                Intervention::Ablate { points, bases } if points.contains(&point) => match bases.get(&layer) {
                    Some(q) => ablate(&x, q)?,
                    None => x,
                },
                Intervention::Add { point: p, layers, vector, alpha } if *p == point && layers.contains(&layer) => {
                    x.broadcast_add(&(vector * *alpha)?)?
                }
                Intervention::Rotate { point: p, layers, b1, b2, angle, adaptive }
                    if *p == point && layers.contains(&layer) =>
                {
                    rotate(&x, b1, b2, *angle, *adaptive)?
                }
                _ => x,
            };
        }
        x.to_dtype(dtype)
    }
}

/// `h − (h Qᵀ) Q` for `h` `[..., hidden]` and orthonormal `q` `[k, hidden]`.
pub fn ablate(h: &Tensor, q: &Tensor) -> candle_core::Result<Tensor> {
    let coeff = h.broadcast_matmul(&q.t()?)?;
    h - coeff.broadcast_matmul(q)?
}

/// Rotation by `angle` in the plane of orthonormal `b1`, `b2` (see [`Intervention::Rotate`]).
pub fn rotate(h: &Tensor, b1: &Tensor, b2: &Tensor, angle: f64, adaptive: bool) -> candle_core::Result<Tensor> {
    let hidden = b1.dim(0)?;
    let (b1m, b2m) = (b1.reshape((hidden, 1))?, b2.reshape((hidden, 1))?);
    let c1 = h.broadcast_matmul(&b1m)?; // [..., 1]
    let c2 = h.broadcast_matmul(&b2m)?;
    let in_plane = (c1.broadcast_mul(b1)? + c2.broadcast_mul(b2)?)?;
    let length = (c1.sqr()? + c2.sqr()?)?.sqrt()?;
    let target = ((b1 * angle.cos())? + (b2 * angle.sin())?)?;
    let rotated = ((h - in_plane)? + length.broadcast_mul(&target)?)?;
    if !adaptive {
        return Ok(rotated);
    }
    let positive = c1.gt(0f32)?.broadcast_as(h.shape())?;
    positive.where_cond(&rotated, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn rows(x: &Tensor) -> Vec<Vec<f32>> {
        x.to_vec2().unwrap()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn plane() -> (Vec<f32>, Vec<f32>) {
        let s = 0.5f32.sqrt();
        (vec![s, s, 0.0, 0.0], vec![-s, s, 0.0, 0.0])
    }

    const H: [f32; 8] = [1.0, 2.0, 3.0, 4.0, -2.0, 0.5, 1.0, -1.0];

    #[test]
    fn ablation_leaves_no_component_along_the_basis() {
        let q = basis_tensor(&[vec![1.0, 1.0, 0.0, 1.0], vec![0.0, 1.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let h = t(&H, (2, 4));
        let out = ablate(&h, &q).unwrap();
        for row in rows(&out) {
            for qr in rows(&q) {
                assert!(dot(&row, &qr).abs() < 1e-5);
            }
        }
        // Idempotent: ablating twice changes nothing more.
        let twice = ablate(&out, &q).unwrap();
        assert!((twice - &out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-6);
    }

    #[test]
    fn rotation_by_zero_is_the_identity_and_by_180_negates_the_plane() {
        let (b1, b2) = plane();
        let (tb1, tb2) =
            (Tensor::new(b1.as_slice(), &Device::Cpu).unwrap(), Tensor::new(b2.as_slice(), &Device::Cpu).unwrap());
        let h = t(&H, (2, 4));
        let zero = rotate(&h, &tb1, &tb2, 0.0, false).unwrap();
        // θ = 0 puts the in-plane part onto b1 with its full length: the identity only when
        // the in-plane part already lies along b1, so test on such a vector.
        let along = t(&[2.0 * b1[0], 2.0 * b1[1], 5.0, -1.0], (1, 4));
        let same = rotate(&along, &tb1, &tb2, 0.0, false).unwrap();
        for (a, b) in rows(&same)[0].iter().zip(&rows(&along)[0]) {
            assert!((a - b).abs() < 1e-5);
        }
        // Every rotation keeps the out-of-plane part and the length.
        let half_turn = rotate(&along, &tb1, &tb2, std::f64::consts::PI, false).unwrap();
        let r = &rows(&half_turn)[0];
        assert!((dot(r, &b1) + 2.0).abs() < 1e-5, "in-plane component negated");
        assert!((r[2] - 5.0).abs() < 1e-6 && (r[3] + 1.0).abs() < 1e-6);
        for (row, orig) in rows(&zero).iter().zip(rows(&h)) {
            let len = |v: &[f32]| dot(v, v).sqrt();
            assert!((len(row) - len(&orig)).abs() < 1e-4);
            assert!(dot(row, &b2).abs() < 1e-5, "θ = 0 lands on b1");
        }
    }

    #[test]
    fn adaptive_rotation_leaves_rows_pointing_away_untouched() {
        let (b1, b2) = plane();
        let (tb1, tb2) =
            (Tensor::new(b1.as_slice(), &Device::Cpu).unwrap(), Tensor::new(b2.as_slice(), &Device::Cpu).unwrap());
        let h = t(&H, (2, 4)); // row 0: h·b1 > 0; row 1: h·b1 < 0
        assert!(dot(&H[..4], &b1) > 0.0 && dot(&H[4..], &b1) < 0.0);
        let out = rows(&rotate(&h, &tb1, &tb2, 1.0, true).unwrap());
        assert_eq!(out[1], H[4..].to_vec(), "h·b1 ≤ 0 is left alone");
        assert_ne!(out[0], H[..4].to_vec());
    }

    #[test]
    fn interventions_apply_only_where_registered() {
        let q = basis_tensor(&[vec![1.0, 0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let iv = Interventions {
            items: vec![
                Intervention::Ablate { points: vec![HookPoint::ResidPre], bases: BTreeMap::from([(1, q)]) },
                Intervention::Add {
                    point: HookPoint::ResidPost,
                    layers: vec![0],
                    vector: Tensor::new(&[0.0f32, 1.0, 0.0, 0.0], &Device::Cpu).unwrap(),
                    alpha: 2.0,
                },
            ],
        };
        let h = t(&H, (2, 4));
        assert_eq!(rows(&iv.apply(HookPoint::ResidPre, 0, h.clone()).unwrap()), rows(&h));
        assert_eq!(rows(&iv.apply(HookPoint::ResidPre, 1, h.clone()).unwrap())[0][0], 0.0);
        assert_eq!(rows(&iv.apply(HookPoint::ResidPost, 0, h.clone()).unwrap())[0][1], 4.0);
    }
}
