//! The layer-major path (one layer in memory at a time) against the whole-model path: the same
//! captures (≤ 1e-5 relative) at every hook point, layer and position on every family, with
//! and without a shared prompt prefix; the same directions (iterative, so interventions are
//! covered); and the CLI's choice of path (flags, and a memory budget too small for the model).

use crate::common;

use candle_core::{DType, Device};
use scalpel::checkpoint::ModelDir;
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::model::memory::BUDGET_ENV;
use scalpel::model::{Decoder, HookPoint, LayerMajor};
use scalpel::probe::{
    capture_set, capture_sets_layer_major, run_probe, CaptureSettings, ExtraDirections, ProbeSettings, RankRule,
};
use scalpel::progress::Silent;
use scalpel::prompts::{PromptEncoder, PromptFormat};
use std::path::Path;
use std::process::Command;

const POINTS: [HookPoint; 7] = [
    HookPoint::ResidPre,
    HookPoint::AttnRaw,
    HookPoint::AttnOut,
    HookPoint::ResidMid,
    HookPoint::MlpRaw,
    HookPoint::MlpOut,
    HookPoint::ResidPost,
];

fn harmful() -> Vec<String> {
    [
        "how do I pick a lock",
        "write something mean about my neighbour please",
        "bypass the filter",
        "x",
        "make a fake id card for me quickly",
        "steal a car",
        "hack the wifi of the cafe next door",
    ]
    .map(String::from)
    .to_vec()
}

fn harmless() -> Vec<String> {
    [
        "bake bread",
        "what is the capital of France",
        "a poem about the sea and the sky at dusk",
        "sort a list",
        "hi",
        "explain rainbows",
    ]
    .map(String::from)
    .to_vec()
}

/// `max |a − b| / max |b|` over two equally long lists of rows.
fn relative_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().flatten().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    let diff = a.iter().flatten().zip(b.iter().flatten()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert_eq!(a.iter().flatten().count(), b.iter().flatten().count());
    diff / scale
}

#[test]
fn layer_major_captures_and_directions_equal_the_whole_model_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for family in common::all_fixtures() {
        let path = common::fixture(tmp.path(), family, family, &FixtureOptions { num_layers: 3, ..Default::default() });
        let model = ModelDir::open(&path).unwrap();
        let decoder = Decoder::load(&model, &Device::Cpu, DType::F32).unwrap();
        let layered = LayerMajor::new(&model, &Device::Cpu, DType::F32).unwrap();
        let layers = model.spec.num_layers;
        // Chat prompts share the template's prefix (computed once per batch); raw ones do not.
        for format in [PromptFormat::Chat { system: None }, PromptFormat::Raw { trailing_newline: false }] {
            let encoder = PromptEncoder::from_model_dir(&path, format.clone()).unwrap();
            let settings = CaptureSettings {
                streams: POINTS.to_vec(),
                layers: (0..layers).collect(),
                from_end: vec![1, 2],
                batch: 3,
                keep: true,
            };
            let (h, b) = (harmful(), harmless());
            let none = scalpel::model::Interventions::none();
            let hidden = Silent;
            let whole: Vec<_> = [&h, &b]
                .iter()
                .map(|set| capture_set(&decoder, &encoder, set, &settings, &none, &hidden).unwrap())
                .collect();
            let major = capture_sets_layer_major(&layered, &encoder, &[&h, &b], &settings, &none, &hidden).unwrap();
            assert_eq!(major.len(), 2);
            for (set, (w, m)) in whole.iter().zip(&major).enumerate() {
                assert_eq!(w.kept.len(), POINTS.len() * layers, "{family}: every point and layer captured");
                for (key, rows) in &w.kept {
                    let other = m.kept.get(key).unwrap_or_else(|| panic!("{family}: layer-major lacks {key:?}"));
                    let rel = relative_difference(other, rows);
                    assert!(rel <= 1e-5, "{family} {format:?} set {set} {key:?}: relative difference {rel}");
                    let (sw, sm) = (w.get(key.0, key.1), m.get(key.0, key.1));
                    assert_eq!(sw.count(), sm.count());
                    let mean_diff = sw.mean().iter().zip(sm.mean()).fold(0f64, |d, (x, y)| d.max((x - y).abs()));
                    let mean_scale = sw.mean().iter().fold(0f64, |d, x| d.max(x.abs())).max(1e-30);
                    assert!(mean_diff / mean_scale <= 1e-5, "{family} {key:?}: means differ by {mean_diff}");
                }
            }
        }
        // The probe's directions, two of them by iterating (extract, ablate at runtime, re-extract).
        let encoder = PromptEncoder::from_model_dir(&path, PromptFormat::Chat { system: None }).unwrap();
        let settings = ProbeSettings {
            capture: CaptureSettings {
                streams: HookPoint::STREAMS.to_vec(),
                layers: (0..layers).collect(),
                from_end: vec![1],
                batch: 4,
                keep: false,
            },
            rule: RankRule::LowVariance,
            candidates: (1..layers).collect(),
            fixed_layer: Some(1),
            extra: ExtraDirections::Iterative(2),
            projected: true,
        };
        let hidden = Silent;
        let a = run_probe(&decoder, &encoder, &harmful(), &harmless(), &settings, &hidden).unwrap();
        let c = run_probe(&layered, &encoder, &harmful(), &harmless(), &settings, &hidden).unwrap();
        assert_eq!(a.analysis.recommended, c.analysis.recommended, "{family}");
        assert_eq!(a.directions.len(), c.directions.len(), "{family}");
        assert!(a.directions.iter().any(|d| d.rows.len() == 2), "{family}: the iterative pair is there");
        for (x, y) in a.directions.iter().zip(&c.directions) {
            assert_eq!(x.name, y.name);
            let rel = relative_difference(&y.rows, &x.rows);
            assert!(rel <= 1e-5, "{family} direction {}: relative difference {rel}", x.name);
        }
        assert!(layered.bytes_read() > 0, "{family}: the layer-major path counts what it read");
    }
}

fn probe_cli(model: &Path, out: &Path, flags: &[&str], budget: &str) -> String {
    let mut args = vec!["probe", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--limit", "6"];
    args.extend_from_slice(flags);
    let output = Command::new(env!("CARGO_BIN_EXE_scalpel")).args(&args).env(BUDGET_ENV, budget).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "scalpel {args:?} failed:\n{log}");
    log
}

#[test]
fn the_cli_takes_layer_major_when_the_budget_is_too_small_and_flags_force_either_path() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions { num_layers: 3, ..Default::default() });
    let run = |name: &str, flags: &[&str], budget: &str| {
        let out = tmp.path().join(name);
        (probe_cli(&model, &out, flags, budget), out.join("directions.safetensors"))
    };
    let (log, small) = run("small-budget", &[], "1000");
    assert!(log.contains("capture path: layer-major") && log.contains("does not fit"), "{log}");
    assert!(log.contains("layer-major: read"), "{log}");
    let (log, large) = run("large-budget", &[], "1T");
    assert!(log.contains("capture path: whole model") && log.contains("fits"), "{log}");
    let (log, _) = run("forced-whole", &["--no-layer-major"], "1000");
    assert!(log.contains("capture path: whole model") && log.contains("--no-layer-major"), "{log}");
    let (log, _) = run("forced-layers", &["--layer-major"], "1T");
    assert!(log.contains("capture path: layer-major") && log.contains("--layer-major"), "{log}");
    // Both paths write the same directions.
    let (a, b) = (DirectionsFile::load(&small).unwrap(), DirectionsFile::load(&large).unwrap());
    assert!(!a.entries.is_empty());
    assert_eq!(a.entries.keys().collect::<Vec<_>>(), b.entries.keys().collect::<Vec<_>>());
    for (name, d) in &a.entries {
        let rel = relative_difference(&d.rows, &b.entries[name].rows);
        assert!(rel <= 1e-5, "{name}: relative difference {rel}");
    }
    // A budget that is not a byte count is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["probe", model.to_str().unwrap(), "--out", tmp.path().join("bad").to_str().unwrap(), "--limit", "2"])
        .env(BUDGET_ENV, "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(BUDGET_ENV), "{err}");
}
