//! A bf16/f16 checkpoint run in f32 with its matrices kept 16-bit (`WeightStorage::Checkpoint`)
//! gives exactly what it gives with every weight widened at load (`WeightStorage::Compute`):
//! logits, captures, greedy generations, and the logits of the model with a surgery plan applied
//! in memory (a search trial), for every family, through the small-rows kernel and through
//! candle's matmul; the 16-bit weights take less memory. Where AMX multiplies the widened bf16
//! weights (`scalpel::kernels::amx`), the two agree to f32 accuracy instead of bit for bit.

use crate::common;

use candle_core::{DType, Device};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::{FixtureDtype, FixtureOptions};
use scalpel::kernels::isa;
use scalpel::model::{
    generate, CaptureSpec, Decoder, ForwardRequest, GenerateOptions, HookPoint, Interventions, LogitsMode, Sampling,
    WeightStorage,
};
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan, DirectionChoice, SurgeryOptions, SurgeryPlan};

/// Logits of every position and captures of every stream, as bits, for a left-padded batch of
/// `rows` prompts of `len` tokens (few rows take the kernel, many take candle's matmul).
fn run(decoder: &Decoder, rows: usize, len: usize) -> (Vec<u32>, Captured) {
    let vocab = decoder.spec().vocab_size as u32;
    let ids: Vec<Vec<u32>> =
        (0..rows).map(|r| (0..len).map(|t| (7 + 31 * r as u32 + 13 * t as u32) % vocab).collect()).collect();
    let mut mask = vec![vec![1u8; len]; rows];
    mask[0][..2].fill(0);
    let layers = decoder.spec().num_layers;
    let capture = CaptureSpec {
        points: HookPoint::STREAMS.to_vec(),
        layers: (0..layers).collect(),
        from_end: vec![1, 3],
        routing: false,
    };
    let none = Interventions::none();
    let request = ForwardRequest { capture: Some(&capture), interventions: &none, logits: LogitsMode::All };
    let out = decoder.forward(&ids, &mask, None, &request).unwrap();
    let bits = |t: &candle_core::Tensor| -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    };
    let captures: std::collections::BTreeMap<_, _> = out.captures.values.iter().map(|(k, v)| (*k, bits(v))).collect();
    assert_eq!(captures.len(), HookPoint::STREAMS.len() * layers);
    (bits(out.logits.as_ref().unwrap()), captures)
}

/// Captured values (as bits) by hook point and layer.
type Captured = std::collections::BTreeMap<(HookPoint, usize), Vec<u32>>;

fn greedy(decoder: &Decoder) -> Vec<Vec<u32>> {
    let prompts = vec![vec![5, 9, 40, 3], vec![17, 2], vec![60, 61, 62, 63, 64, 65]];
    let options = GenerateOptions { max_tokens: 6, sampling: Sampling::default(), stop_ids: Vec::new() };
    let out = generate(decoder, &prompts, 0, &options, &Interventions::none(), &mut |_, _| false).unwrap();
    out.into_iter().map(|g| g.ids).collect()
}

fn edit_plan(model: &ModelDir, dirs: &std::path::Path) -> SurgeryPlan {
    let options = SurgeryOptions {
        layers: (0..model.spec.num_layers).collect(),
        targets: WriterKind::ALL.to_vec(),
        direction: DirectionChoice::Fixed { name: "resid_pre.1".into() },
        strength: 0.7,
        norm_preserve: true,
        untie: false,
        biases: true,
        profile: None,
        experts: Default::default(),
    };
    plan(model, &DirectionsFile::load(dirs).unwrap(), &options).unwrap()
}

#[test]
fn sixteen_bit_weights_give_the_same_logits_captures_and_generations_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::all_fixtures() {
        for dtype in [FixtureDtype::BF16, FixtureDtype::F16] {
            let biases = matches!(family, "llama" | "qwen3" | "qwen");
            let options = FixtureOptions { num_layers: 2, dtype, output_biases: biases, ..Default::default() };
            let name = format!("{family}-{dtype:?}");
            let model = ModelDir::open(&common::fixture(tmp.path(), &name, family, &options)).unwrap();
            let load = |storage| Decoder::load_with(&model, &Device::Cpu, DType::F32, storage).unwrap();
            let (narrow, wide) = (load(WeightStorage::Checkpoint), load(WeightStorage::Compute));
            assert!(
                narrow.weight_bytes() * 10 < wide.weight_bytes() * 6,
                "{name}: 16-bit storage takes {} bytes, f32 {}",
                narrow.weight_bytes(),
                wide.weight_bytes()
            );
            // With AMX, the widened bf16 weights are multiplied by the AMX products, and with
            // AVX-512 widened weights are kept in panels for a kernel of their own: the same
            // values to f32 accuracy, summed in another order (f16 weights are not exact in bf16,
            // so they take the panels). Else both take the same kernels, bit for bit.
            let packed = (isa::has_amx() && dtype == FixtureDtype::BF16) || isa::has_avx512f();
            let same = |a: &(Vec<u32>, Captured), b: &(Vec<u32>, Captured), what: &str| {
                if packed {
                    assert_close(&a.0, &b.0, &format!("{name}: {what}, logits"));
                    for (key, values) in &a.1 {
                        assert_close(values, &b.1[key], &format!("{name}: {what}, {key:?}"));
                    }
                } else {
                    assert!(a == b, "{name}: {what} differ");
                }
            };
            for (rows, len) in [(2, 5), (3, 50)] {
                same(&run(&narrow, rows, len), &run(&wide, rows, len), &format!("{rows} × {len} tokens"));
            }
            assert_eq!(greedy(&narrow), greedy(&wide), "{name}: greedy generations differ");
            let dirs = common::directions(tmp.path(), model.spec.hidden_size, 2, 1, 1);
            let p = edit_plan(&model, &dirs);
            let (narrow_edited, wide_edited) = (narrow.with_edits(&p).unwrap(), wide.with_edits(&p).unwrap());
            same(&run(&narrow_edited, 2, 5), &run(&wide_edited, 2, 5), "edited models");
            assert!(run(&narrow_edited, 2, 5) != run(&narrow, 2, 5), "{name}: the edit changed nothing");
        }
    }
}

/// On a bf16 checkpoint, a plan applied in memory (a search trial) runs the very weights that
/// `ablate` writes: its edits are rounded to bf16 as the written checkpoint's are, so the logits
/// are equal bit for bit (with AMX or without, output biases and a tied embedding included).
#[test]
fn a_bf16_model_edited_in_memory_equals_the_checkpoint_ablate_writes() {
    let tmp = tempfile::tempdir().unwrap();
    for family in ["qwen2", "gemma"] {
        let options =
            FixtureOptions { num_layers: 2, dtype: FixtureDtype::BF16, output_biases: true, ..Default::default() };
        let model = ModelDir::open(&common::fixture(tmp.path(), family, family, &options)).unwrap();
        let dirs = common::directions(tmp.path(), model.spec.hidden_size, 2, 1, 1);
        let p = edit_plan(&model, &dirs);
        let out = tmp.path().join(format!("{family}-edited"));
        let record = p.record(&model.root.display().to_string(), "", "");
        ablate(&model, &p, &record, &out, false, true, &Silent).unwrap();
        let written = Decoder::load(&ModelDir::open(&out).unwrap(), &Device::Cpu, DType::F32).unwrap();
        let original = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let in_memory = original.with_edits(&p).unwrap();
        assert!(run(&in_memory, 3, 20) == run(&written, 3, 20), "{family}: in memory and written differ");
        assert!(run(&in_memory, 3, 20) != run(&original, 3, 20), "{family}: the edit changed nothing");
    }
}

/// `a` and `b` (f32 bits) agree to f32 accuracy: within 2e-5 of the largest magnitude.
fn assert_close(a: &[u32], b: &[u32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let (a, b): (Vec<f32>, Vec<f32>) =
        (a.iter().map(|&x| f32::from_bits(x)).collect(), b.iter().map(|&x| f32::from_bits(x)).collect());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let worst = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 2e-5 * scale, "{what}: differ by {worst:e} (largest value {scale:e})");
}

#[test]
fn f32_checkpoints_and_other_compute_dtypes_keep_the_compute_dtype() {
    let s = WeightStorage::Checkpoint;
    assert_eq!(s.matrix_dtype(DType::BF16, DType::F32, &Device::Cpu), DType::BF16);
    assert_eq!(s.matrix_dtype(DType::F16, DType::F32, &Device::Cpu), DType::F16);
    assert_eq!(s.matrix_dtype(DType::F32, DType::F32, &Device::Cpu), DType::F32);
    assert_eq!(s.matrix_dtype(DType::F16, DType::BF16, &Device::Cpu), DType::BF16);
    assert_eq!(WeightStorage::Compute.matrix_dtype(DType::BF16, DType::F32, &Device::Cpu), DType::F32);
    assert_eq!(WeightStorage::parse("compute").unwrap(), WeightStorage::Compute);
    assert_eq!(WeightStorage::parse("Checkpoint").unwrap(), WeightStorage::Checkpoint);
    assert!(WeightStorage::parse("f64").is_err());
}
