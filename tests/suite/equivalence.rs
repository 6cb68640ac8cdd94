//! Oracle 2 of docs/DESIGN.md: a checkpoint edited by `ablate` (embedding + every writer of every
//! layer) gives the same logits as the original model with the equivalent runtime ablation.
//!
//! For families without post-norms the runtime side ablates `r` where each writer adds to the
//! stream (after the embedding, attn_out, mlp_out). For Gemma 2/3 the writers sit behind
//! RMSNorms; the γ-aware weight edit removes `u = γ ⊙ r / ‖γ ⊙ r‖` from the writer's raw output,
//! so the exact runtime equivalent ablates `u` before the post-norm (attn_raw, mlp_raw). (Ablating
//! `r` after the norm also leaves the stream orthogonal to `r`, but is a different map: the
//! norm re-scales.) Both sides leave every residual stream orthogonal to `r`, checked too.
//! With a tied head the edited head computes `E (I − r rᵀ) n`; the runtime side then also
//! ablates `r` from the final-norm output, unless the head was untied.

use crate::common;

use candle_core::{DType, Device, Tensor};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::model::{CaptureSpec, Decoder, ForwardRequest, HookPoint, Interventions, LogitsMode};

const IDS: [u32; 9] = [3, 50, 120, 7, 260, 99, 14, 33, 201];

fn logits(
    model: &ModelDir,
    iv: &Interventions,
    capture: Option<&CaptureSpec>,
) -> (Vec<Vec<f32>>, scalpel::model::Captures) {
    let decoder = Decoder::load(model, &Device::Cpu, DType::F32).unwrap();
    let req = ForwardRequest { capture, interventions: iv, logits: LogitsMode::All };
    let out = decoder.forward(&[IDS.to_vec()], &[vec![1; IDS.len()]], None, &req).unwrap();
    (out.logits.unwrap().squeeze(0).unwrap().to_vec2().unwrap(), out.captures)
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn weight_edit_equals_runtime_ablation_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::all_fixtures() {
        let biases = matches!(family, "llama" | "qwen3" | "qwen");
        let src_dir = common::fixture(
            tmp.path(),
            family,
            family,
            &FixtureOptions { num_layers: 3, output_biases: biases, ..Default::default() },
        );
        let src = ModelDir::open(&src_dir).unwrap();
        let dirs = common::directions(tmp.path(), src.spec.hidden_size, 3, 1, 1);
        let r = DirectionsFile::load(&dirs).unwrap().entries["resid_pre.1"].rows[0].clone();
        let tied = src.head_is_tied();
        let variants: &[bool] = if tied { &[false, true] } else { &[false] };
        for &untie in variants {
            let edited = common::ablate_everything(&src, &dirs, &tmp.path().join(format!("{family}-{untie}")), untie);
            let streams = CaptureSpec {
                points: HookPoint::STREAMS.to_vec(),
                layers: (0..3).collect(),
                from_end: vec![1, 4],
                routing: false,
            };
            let (after, captured) = logits(&edited, &Interventions::none(), Some(&streams));
            let (runtime, _) = logits(&src, &common::runtime_equivalent(&src, &r, tied && !untie), None);
            let (before, _) = logits(&src, &Interventions::none(), None);
            let diff = max_diff(&after, &runtime);
            assert!(diff < 1e-4, "{family} (untie: {untie}): edited vs runtime ablation differ by {diff}");
            assert!(max_diff(&after, &before) > 1e-3, "{family}: the edit changes the model");
            // The edited model's residual stream has no component along r, at every layer.
            let rt = Tensor::new(r.as_slice(), &Device::Cpu).unwrap();
            for (key, value) in &captured.values {
                let along =
                    value.broadcast_matmul(&rt.unsqueeze(1).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
                let scale = value.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let along = along.to_scalar::<f32>().unwrap();
                assert!(along < 1e-4 * scale.max(1.0), "{family}: {key:?} has r-component {along}");
            }
        }
    }
}
