//! Helpers shared by the integration tests.

use candle_core::Device;
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{encode_f32, write_checkpoint, EditableDtype, ModelDir, TensorEdit, TensorRef, WriteOptions};
use scalpel::directions::{Direction, DirectionsFile};
use scalpel::fixture::{write_fixture, FixtureOptions, FAMILIES};
use scalpel::model::{basis_tensor, HookPoint, Intervention, Interventions};
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan, Basis, DirectionChoice, SurgeryOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A copy of the model at `src` in `out` with each named tensor's values replaced (stored in the
/// tensor's own dtype), every other tensor and file as it was.
pub fn replace_tensors(src: &Path, out: &Path, replacements: &[(&str, &[f32])]) -> ModelDir {
    let model = ModelDir::open(src).unwrap();
    let encoded: BTreeMap<&str, Vec<u8>> = replacements
        .iter()
        .map(|&(name, values)| {
            let view = model.checkpoint.tensor(name).unwrap();
            (name, encode_f32(EditableDtype::of(view.dtype, name).unwrap(), values))
        })
        .collect();
    let edit = |v: TensorRef<'_>| {
        Ok(match encoded.get(v.name) {
            Some(bytes) => TensorEdit::Replace(bytes.clone()),
            None => TensorEdit::Keep,
        })
    };
    write_checkpoint(&model, out, &WriteOptions { force: true, ..Default::default() }, &Silent, &edit).unwrap();
    ModelDir::open(out).unwrap()
}

/// Gemma 4 with its E models' per-layer inputs and shared keys and values, as the tests name
/// it: a `gemma4_text` fixture with [`FixtureOptions::per_layer_inputs`], of at least 3 layers
/// (so that one reuses an earlier layer's keys; with 4 or more, one of each kind does).
pub const GEMMA4_E: &str = "gemma4_e";

/// Every fixture family ([`FAMILIES`]) and [`GEMMA4_E`].
pub fn all_fixtures() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().copied().chain([GEMMA4_E])
}

/// Write a fixture of `family` (or [`GEMMA4_E`]) into `dir/name` and return its path.
pub fn fixture(dir: &Path, name: &str, family: &str, options: &FixtureOptions) -> PathBuf {
    let path = dir.join(name);
    let written = if family == GEMMA4_E {
        let options =
            FixtureOptions { per_layer_inputs: true, num_layers: options.num_layers.max(3), ..options.clone() };
        write_fixture("gemma4_text", &path, &options)
    } else {
        write_fixture(family, &path, options)
    };
    written.unwrap_or_else(|e| panic!("fixture {family}: {e}"));
    path
}

/// Deterministic pseudo-random unit vector.
pub fn unit_vector(hidden: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(17);
    let mut v: Vec<f32> = (0..hidden)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 20001) as f32 / 10000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// A directions file with `resid_pre.L` for every layer (k rows each) recommending `recommended`.
pub fn directions(dir: &Path, hidden: usize, layers: usize, k: usize, recommended: usize) -> PathBuf {
    let path = dir.join(format!("directions-{hidden}-{layers}-{k}.safetensors"));
    let entries: Vec<Direction> = (0..layers)
        .map(|l| Direction {
            name: format!("resid_pre.{l}"),
            rows: (0..k).map(|i| unit_vector(hidden, (l * 31 + i) as u64 + 1)).collect(),
        })
        .collect();
    let meta = BTreeMap::from([
        ("recommended_layer".to_string(), recommended.to_string()),
        ("recommended_stream".to_string(), "resid_pre".to_string()),
    ]);
    DirectionsFile::save(&path, &entries, &meta).unwrap();
    path
}

/// Names of the entries of a folder (to check nothing was left behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The runtime ablation equivalent to the weight edit of `model` against `r`.
pub fn runtime_equivalent(model: &ModelDir, r: &[f32], ablate_head_input: bool) -> Interventions {
    let spec = &model.spec;
    let q = basis_tensor(&[r.to_vec()], &Device::Cpu).unwrap();
    let mut items =
        vec![Intervention::Ablate { points: vec![HookPoint::ResidPre], bases: BTreeMap::from([(0, q.clone())]) }];
    if ablate_head_input {
        items.push(Intervention::Ablate {
            points: vec![HookPoint::FinalNorm],
            bases: BTreeMap::from([(spec.num_layers, q.clone())]),
        });
    }
    let layers: Vec<usize> = (0..spec.num_layers).collect();
    for writer in spec.writers(&layers, &[WriterKind::Attn, WriterKind::Mlp, WriterKind::PerLayer]) {
        let layer = writer.layer.unwrap();
        let (raw, out) = match writer.kind {
            WriterKind::Attn => (HookPoint::AttnRaw, HookPoint::AttnOut),
            WriterKind::PerLayer => (HookPoint::PerLayerRaw, HookPoint::PerLayerOut),
            _ => (HookPoint::MlpRaw, HookPoint::MlpOut),
        };
        let (point, basis) = match &writer.post_norm {
            None => (out, q.clone()),
            Some(norm) => {
                let (w, _) = model.checkpoint.read_f32(norm).unwrap();
                let gamma: Vec<f32> = w.iter().map(|x| x + spec.norm_kind.offset()).collect();
                let u = Basis::orthonormal(&[r.to_vec()]).unwrap().through_norm(&gamma).unwrap();
                let u: Vec<f32> = u.rows()[0].iter().map(|&x| x as f32).collect();
                (raw, basis_tensor(&[u], &Device::Cpu).unwrap())
            }
        };
        items.push(Intervention::Ablate { points: vec![point], bases: BTreeMap::from([(layer, basis)]) });
    }
    Interventions { items }
}

/// Every writer of the first `layers` layers and the embedding, fully (λ = 1) against the
/// direction `name`, biases included, the head left tied.
pub fn surgery_options(layers: usize, name: &str) -> SurgeryOptions {
    SurgeryOptions {
        layers: (0..layers).collect(),
        targets: WriterKind::ALL.to_vec(),
        direction: DirectionChoice::Fixed { name: name.into() },
        strength: 1.0,
        norm_preserve: false,
        untie: false,
        biases: true,
        profile: None,
        experts: Default::default(),
    }
}

/// `model` edited by `ablate` against `resid_pre.1` of `dirs` (embedding + every writer of every layer).
pub fn ablate_everything(src: &ModelDir, dirs: &std::path::Path, out: &std::path::Path, untie: bool) -> ModelDir {
    let directions = DirectionsFile::load(dirs).unwrap();
    let options = SurgeryOptions { untie, ..surgery_options(src.spec.num_layers, "resid_pre.1") };
    let p = plan(src, &directions, &options).unwrap();
    ablate(src, &p, &p.record("", "", ""), out, false, true, &Silent).unwrap();
    ModelDir::open(out).unwrap()
}

/// The f32 logits of the last position of `ids` run alone through `model` on the CPU.
pub fn last_logits(model: &ModelDir, ids: &[u32]) -> Vec<f32> {
    let d = scalpel::model::Decoder::load(model, &Device::Cpu, candle_core::DType::F32).unwrap();
    decoder_last_logits(&d, ids, &Interventions::none())
}

/// The logits of the last position of `ids` run alone through `decoder` with `interventions`.
pub fn decoder_last_logits(decoder: &scalpel::model::Decoder, ids: &[u32], interventions: &Interventions) -> Vec<f32> {
    let req = scalpel::model::ForwardRequest { capture: None, interventions, logits: scalpel::model::LogitsMode::Last };
    decoder
        .forward(&[ids.to_vec()], &[vec![1; ids.len()]], None, &req)
        .unwrap()
        .logits
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()
}
