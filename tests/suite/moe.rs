//! Mixture-of-experts checkpoints whose experts are stacked (`experts.gate_up_proj` `[E, 2I, H]`,
//! `experts.down_proj` `[E, H, I]`): they run as the same experts stored one by one (against
//! candle-transformers), every slice of a stacked output tensor is edited, recorded and verified
//! on its own (and a slice left unedited fails), the edit equals runtime ablation, and a stacked
//! tensor in another layout is an error naming it.

use crate::common;
use crate::decoder_oracle::theirs;

use common::{directions, fixture};
use safetensors::{tensor::TensorView, Dtype};
use scalpel::arch::{ExpertStorage, MlpPart, WriterKind};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan, projection, verify, Basis, SurgeryRecord};
use std::collections::BTreeMap;
use std::path::Path;

const MOE_FAMILIES: [&str; 3] = ["mixtral", "qwen2_moe", "qwen3_moe"];
const IDS: [u32; 9] = [3, 50, 120, 7, 260, 99, 14, 33, 201];

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn read_all(model: &ModelDir) -> Tensors {
    model
        .checkpoint
        .names()
        .into_iter()
        .map(|n| {
            let (values, shape) = model.checkpoint.read_f32(n).unwrap();
            (n.to_string(), (shape, values))
        })
        .collect()
}

/// A copy of the model folder `src` in `out` (side files copied) holding `tensors` in f32.
fn write_all(src: &Path, out: &Path, tensors: &Tensors) {
    std::fs::create_dir_all(out).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "safetensors") {
            std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (shape, v))| (n.clone(), shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        bytes.iter().map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

/// The stacked experts of `model` split into one set of matrices per expert, under the
/// family's per-expert names.
fn unstacked(model: &ModelDir) -> Tensors {
    let mut tensors = read_all(model);
    let mixtral = model.spec.family.model_type() == "mixtral";
    let (gate, up, down) = if mixtral { ("w1", "w3", "w2") } else { ("gate_proj", "up_proj", "down_proj") };
    for name in tensors.keys().filter(|n| n.ends_with("mlp.experts.down_proj")).cloned().collect::<Vec<_>>() {
        let layer_prefix = name.strip_suffix("mlp.experts.down_proj").unwrap().to_string();
        let block = format!("{layer_prefix}{}", if mixtral { "block_sparse_moe." } else { "mlp." });
        let (shape, downs) = tensors.remove(&name).unwrap();
        let (_, gate_ups) = tensors.remove(&format!("{layer_prefix}mlp.experts.gate_up_proj")).unwrap();
        let (experts, hidden, inter) = (shape[0], shape[1], shape[2]);
        for e in 0..experts {
            let gu = &gate_ups[e * 2 * inter * hidden..(e + 1) * 2 * inter * hidden];
            tensors.insert(
                format!("{block}experts.{e}.{gate}.weight"),
                (vec![inter, hidden], gu[..inter * hidden].to_vec()),
            );
            tensors.insert(
                format!("{block}experts.{e}.{up}.weight"),
                (vec![inter, hidden], gu[inter * hidden..].to_vec()),
            );
            let d = downs[e * hidden * inter..(e + 1) * hidden * inter].to_vec();
            tensors.insert(format!("{block}experts.{e}.{down}.weight"), (vec![hidden, inter], d));
        }
        if mixtral {
            let router = tensors.remove(&format!("{layer_prefix}mlp.gate.weight")).unwrap();
            tensors.insert(format!("{block}gate.weight"), router);
        }
    }
    tensors
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The logits of every position of `IDS`, flattened.
fn all_logits(model: &ModelDir) -> Vec<f32> {
    use scalpel::model::{Decoder, ForwardRequest, Interventions, LogitsMode};
    let decoder = Decoder::load(model, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    let iv = Interventions::none();
    let req = ForwardRequest { capture: None, interventions: &iv, logits: LogitsMode::All };
    let out = decoder.forward(&[IDS.to_vec()], &[vec![1; IDS.len()]], None, &req).unwrap();
    out.logits.unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn stacked_options(num_layers: usize) -> FixtureOptions {
    FixtureOptions { num_layers, stacked_experts: true, ..Default::default() }
}

#[test]
fn stacked_experts_run_as_the_same_experts_stored_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    for family in MOE_FAMILIES {
        let dir = fixture(tmp.path(), family, family, &stacked_options(2));
        let stacked = ModelDir::open(&dir).unwrap();
        assert_eq!(stacked.spec.moe.as_ref().unwrap().storage, ExpertStorage::Stacked, "{family}");
        assert!(stacked.summary().unrecognised_tensors.is_empty(), "{family}");
        let split = tmp.path().join(format!("{family}-split"));
        write_all(&dir, &split, &unstacked(&stacked));
        let per_expert = ModelDir::open(&split).unwrap();
        assert_eq!(per_expert.spec.moe.as_ref().unwrap().storage, ExpertStorage::PerExpert, "{family}");
        assert!(per_expert.summary().unrecognised_tensors.is_empty(), "{family}: every split tensor is named");
        let a = common::last_logits(&stacked, &IDS);
        assert!(a.iter().fold(0f32, |m, x| m.max(x.abs())) > 0.1, "{family}: logits are not degenerate");
        assert!(max_diff(&a, &common::last_logits(&per_expert, &IDS)) < 1e-5, "{family}: stacked vs one by one");
        let diff = max_diff(&a, &theirs(family, &split, &IDS));
        assert!(diff < 1e-4, "{family}: stacked vs candle-transformers: max |Δlogit| = {diff}");
        // The router spreads the prompt over the experts: zeroing any one expert's output
        // matrix changes the logits (at some position), so every expert's edit is exercised.
        let a = all_logits(&stacked);
        let down =
            stacked.checkpoint.names().into_iter().find(|n| n.ends_with("experts.down_proj")).unwrap().to_string();
        let (values, shape) = stacked.checkpoint.read_f32(&down).unwrap();
        let size = shape[1] * shape[2];
        for e in 0..shape[0] {
            let mut without = values.clone();
            without[e * size..(e + 1) * size].iter_mut().for_each(|v| *v = 0.0);
            let out = tmp.path().join(format!("{family}-without-{e}"));
            let model = common::replace_tensors(&dir, &out, &[(&down, &without)]);
            assert!(max_diff(&a, &all_logits(&model)) > 1e-4, "{family}: expert {e} is never routed to");
        }
    }
}

#[test]
fn every_slice_of_a_stacked_expert_tensor_is_edited_recorded_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    for family in MOE_FAMILIES {
        let src = fixture(tmp.path(), family, family, &stacked_options(3));
        let model = ModelDir::open(&src).unwrap();
        let experts = model.spec.moe.as_ref().unwrap().num_experts;
        let dirs = directions(tmp.path(), model.spec.hidden_size, 3, 1, 1);
        let directions = DirectionsFile::load(&dirs).unwrap();
        let options = common::surgery_options(3, "resid_pre.1");
        let planned = plan(&model, &directions, &options).unwrap();
        let sparse: Vec<usize> = (0..3).filter(|&l| model.spec.is_sparse(l)).collect();
        assert!(!sparse.is_empty(), "{family}");
        for &layer in &sparse {
            let slices: Vec<usize> = planned
                .edits
                .iter()
                .filter(|e| e.layer == Some(layer) && e.part != MlpPart::SharedExpert && e.kind == WriterKind::Mlp)
                .map(|e| e.slice.expect("a slice of the stacked tensor"))
                .collect();
            assert_eq!(slices, (0..experts).collect::<Vec<_>>(), "{family}: layer {layer}");
        }
        let out = tmp.path().join(format!("{family}-edited"));
        ablate(&model, &planned, &planned.record("src", "dirs", ""), &out, false, true, &Silent).unwrap();
        let edited = ModelDir::open(&out).unwrap();

        // The record lists one edit per slice, by expert.
        let record: SurgeryRecord =
            serde_json::from_str(&std::fs::read_to_string(out.join("scalpel_edit.json")).unwrap()).unwrap();
        let recorded: Vec<(usize, usize)> = record.edits.iter().filter_map(|e| Some((e.layer?, e.slice?))).collect();
        assert_eq!(recorded.len(), sparse.len() * experts, "{family}");
        assert!(record.edits.iter().filter(|e| e.slice.is_some()).all(|e| e.part == MlpPart::Expert(e.slice.unwrap())));

        let report = verify(&edited, &planned).unwrap();
        assert!(report.all_pass() && report.worst() < 1e-6, "{family}: worst {}", report.worst());
        assert_eq!(report.rows.iter().filter(|r| r.slice.is_some()).count(), sparse.len() * experts);
        let r = Basis::orthonormal(&directions.entries["resid_pre.1"].rows).unwrap();
        let stacked_down = planned.edits.iter().find(|e| e.slice.is_some()).unwrap().tensor.clone();
        let (before, shape) = model.checkpoint.read_f32(&stacked_down).unwrap();
        let (after, _) = edited.checkpoint.read_f32(&stacked_down).unwrap();
        let size = shape[1] * shape[2];
        for e in 0..shape[0] {
            let (along, total) = projection::column_residual(&after[e * size..(e + 1) * size], shape[2], &r);
            assert!(along / total < 1e-6, "{family}: slice {e} still writes along r");
            let (was, was_total) = projection::column_residual(&before[e * size..(e + 1) * size], shape[2], &r);
            assert!(was / was_total > 1e-3, "{family}: slice {e} wrote along r before");
        }

        // One slice put back as it was: that slice's row fails, the others pass.
        let mut partial = after.clone();
        partial[size..2 * size].copy_from_slice(&before[size..2 * size]);
        let half =
            common::replace_tensors(&out, &tmp.path().join(format!("{family}-partial")), &[(&stacked_down, &partial)]);
        let report = verify(&half, &planned).unwrap();
        let failed: Vec<(String, Option<usize>)> =
            report.rows.iter().filter(|r| !r.pass).map(|r| (r.tensor.clone(), r.slice)).collect();
        assert_eq!(failed, [(stacked_down.clone(), Some(1))], "{family}");

        // The edited model equals runtime ablation of r at every writer, routing included.
        let runtime =
            common::runtime_equivalent(&model, &r.rows()[0].iter().map(|&x| x as f32).collect::<Vec<_>>(), false);
        let decoder =
            scalpel::model::Decoder::load(&model, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
        let ablated = common::decoder_last_logits(&decoder, &IDS, &runtime);
        let weights = common::last_logits(&edited, &IDS);
        assert!(max_diff(&weights, &ablated) < 1e-4, "{family}: weight edit vs runtime ablation");
        assert!(max_diff(&weights, &common::last_logits(&model, &IDS)) > 1e-3, "{family}: the edit changes the model");
        // A trial in memory edits the same slices.
        let in_memory = decoder.with_edits(&planned).unwrap();
        let trial = common::decoder_last_logits(&in_memory, &IDS, &scalpel::model::Interventions::none());
        assert!(max_diff(&weights, &trial) < 1e-4, "{family}: in-memory edit vs written checkpoint");

        // PEFT has no module for a slice: the adapter export says so.
        let err = scalpel::export::export_adapter(
            &model,
            &planned,
            None,
            None,
            &tmp.path().join(format!("{family}-lora")),
            false,
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(&stacked_down), "{family}: {err}");
    }
}

#[test]
fn a_stacked_experts_tensor_of_another_layout_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    for family in MOE_FAMILIES {
        let dir = fixture(tmp.path(), family, family, &stacked_options(2));
        let model = ModelDir::open(&dir).unwrap();
        let tensors = read_all(&model);
        for suffix in ["experts.down_proj", "experts.gate_up_proj"] {
            let mut bad = tensors.clone();
            let name = bad.keys().find(|n| n.ends_with(suffix)).unwrap().clone();
            // The last two dimensions swapped: `[E, I, H]` / `[E, H, 2I]`, as other exporters store them.
            let (shape, values) = bad.remove(&name).unwrap();
            bad.insert(name.clone(), (vec![shape[0], shape[2], shape[1]], values));
            let out = tmp.path().join(format!("{family}-{suffix}"));
            write_all(&dir, &out, &bad);
            let err = ModelDir::open(&out).err().unwrap_or_else(|| panic!("{family}: {name} accepted")).to_string();
            assert!(err.contains(&name) && err.contains("shape"), "{family}: {err}");
        }
    }
}
