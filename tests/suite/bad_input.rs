//! Oracle 6 of docs/DESIGN.md: bad input is a clear error naming the file or tensor, and nothing is written.

use crate::common;

use common::{directions, entries, fixture};
use scalpel::checkpoint::{Checkpoint, ModelDir};
use scalpel::directions::{Direction, DirectionsFile};
use scalpel::fixture::FixtureOptions;
use scalpel::progress::Silent;
use scalpel::surgery::{ablate, plan};
use std::collections::BTreeMap;
use std::path::Path;

/// A valid two-tensor safetensors file, as bytes.
fn valid_file() -> Vec<u8> {
    let a: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let b: Vec<u8> = (0..8u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let views = vec![
        ("a".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 4], &a).unwrap()),
        ("b".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8], &b).unwrap()),
    ];
    safetensors::serialize(views, None).unwrap()
}

/// Replace the header of a safetensors file with `header` (JSON), keeping the data.
fn with_header(data_len: usize, header: &str) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data_len));
    out
}

fn open_error(dir: &Path, bytes: &[u8]) -> String {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    Checkpoint::open(dir).unwrap_err().to_string()
}

#[test]
fn corrupt_safetensors_files_are_named_and_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let good = valid_file();
    assert!(Checkpoint::open(tmp.path()).is_err(), "empty folder");
    std::fs::write(tmp.path().join("model.safetensors"), &good).unwrap();
    Checkpoint::open(tmp.path()).expect("the valid file opens");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("shorter than the length prefix", good[..5].to_vec(), "truncated"),
        ("truncated data", good[..good.len() - 4].to_vec(), "truncated"),
        (
            "header length beyond the file",
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
                b
            },
            "beyond the end",
        ),
        (
            "overlapping offsets",
            with_header(
                96,
                r#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[8],"data_offsets":[32,64]}}"#,
            ),
            "`b`",
        ),
        (
            "out-of-bounds offsets",
            with_header(
                64,
                r#"{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F32","shape":[8],"data_offsets":[64,96]}}"#,
            ),
            "does not end where the file ends",
        ),
        ("unknown dtype", with_header(64, r#"{"a":{"dtype":"F33","shape":[4,4],"data_offsets":[0,64]}}"#), "F33"),
        (
            "size mismatch",
            with_header(64, r#"{"a":{"dtype":"F32","shape":[4,5],"data_offsets":[0,64]}}"#),
            "dtype and shape",
        ),
        ("not JSON", with_header(8, "{nope}  "), "JSON"),
    ];
    for (what, bytes, expect) in cases {
        let err = open_error(tmp.path(), &bytes);
        assert!(err.contains("model.safetensors"), "{what}: error should name the file: {err}");
        assert!(err.contains(expect), "{what}: expected `{expect}` in: {err}");
    }
}

#[test]
fn index_problems_name_the_tensor_or_shard() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model-00001-of-00001.safetensors"), valid_file()).unwrap();
    let index = |map: serde_json::Value| {
        let value = serde_json::json!({"metadata": {"total_size": 96}, "weight_map": map});
        std::fs::write(tmp.path().join("model.safetensors.index.json"), value.to_string()).unwrap();
    };
    index(serde_json::json!({"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}));
    Checkpoint::open(tmp.path()).expect("valid index");
    index(serde_json::json!({"a": "model-00001-of-00001.safetensors", "c": "model-00001-of-00001.safetensors"}));
    let err = Checkpoint::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("`c`") && err.contains("model-00001-of-00001.safetensors"), "{err}");
    index(serde_json::json!({"a": "model-00002-of-00002.safetensors"}));
    let err = Checkpoint::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("does not exist"), "{err}");
    index(serde_json::json!({"a": "../escape.safetensors"}));
    assert!(Checkpoint::open(tmp.path()).unwrap_err().to_string().contains("plain file name"));
}

#[test]
fn pickle_checkpoints_are_refused_with_a_conversion_hint() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("pickle") && err.contains("safe_serialization"), "{err}");
}

#[test]
fn bad_directions_and_bad_requests_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let hidden = model.spec.hidden_size;
    let before = entries(tmp.path());

    // Wrong length.
    let wrong = directions(tmp.path(), hidden + 3, 2, 1, 0);
    let err = plan(&model, &DirectionsFile::load(&wrong).unwrap(), &common::surgery_options(2, "resid_pre.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}", hidden + 3)) && err.contains(&hidden.to_string()), "{err}");

    // NaN and zero directions are refused when the file is read.
    let bad_path = tmp.path().join("bad.safetensors");
    for (rows, expect) in [(vec![f32::NAN; hidden], "NaN"), (vec![0.0; hidden], "zeros")] {
        DirectionsFile::save(
            &bad_path,
            &[Direction { name: "resid_pre.0".into(), rows: vec![rows] }],
            &BTreeMap::new(),
        )
        .unwrap();
        let err = DirectionsFile::load(&bad_path).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("resid_pre.0") && err.contains("bad.safetensors"), "{err}");
    }
    // Linearly dependent rows.
    let v = common::unit_vector(hidden, 3);
    DirectionsFile::save(
        &bad_path,
        &[Direction { name: "resid_pre.0".into(), rows: vec![v.clone(), v] }],
        &BTreeMap::new(),
    )
    .unwrap();
    let err = plan(&model, &DirectionsFile::load(&bad_path).unwrap(), &common::surgery_options(2, "resid_pre.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dependent") && err.contains("resid_pre.0"), "{err}");

    // Missing entry and layer out of range.
    let good = directions(tmp.path(), hidden, 2, 1, 0);
    let file = DirectionsFile::load(&good).unwrap();
    assert!(plan(&model, &file, &common::surgery_options(2, "resid_mid.7"))
        .unwrap_err()
        .to_string()
        .contains("resid_mid.7"));
    let mut opts = common::surgery_options(2, "resid_pre.0");
    opts.layers = vec![0, 99];
    assert!(plan(&model, &file, &opts).unwrap_err().to_string().contains("99"));

    // Output folder = input folder, or inside it: refused before anything is written.
    let p = plan(&model, &file, &common::surgery_options(2, "resid_pre.0")).unwrap();
    let record = p.record("src", "dirs", "");
    for out in [src.clone(), src.join("sub")] {
        let err = ablate(&model, &p, &record, &out, true, true, &Silent).unwrap_err().to_string();
        assert!(err.contains("overlaps the input"), "{err}");
    }
    // An existing output without --force.
    let existing = tmp.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let err = ablate(&model, &p, &record, &existing, false, true, &Silent).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    std::fs::remove_dir(&existing).unwrap();

    let mut after = entries(tmp.path());
    after.retain(|n| !n.ends_with(".safetensors"));
    let mut expected = before.clone();
    expected.retain(|n| !n.ends_with(".safetensors"));
    assert_eq!(after, expected, "nothing written beside the input (no output, no temp folders)");
    assert_eq!(entries(&src), entries(&src), "input untouched");
}

#[test]
fn a_failure_mid_write_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions::default());
    let model = ModelDir::open(&src).unwrap();
    let out = tmp.path().join("out");
    let options = scalpel::checkpoint::WriteOptions::default();
    let failing = |view: scalpel::checkpoint::TensorRef<'_>| -> scalpel::Result<scalpel::checkpoint::TensorEdit> {
        if view.name.contains("layers.1.") {
            Err(scalpel::Error::bad_tensor(view.name, "simulated failure"))
        } else {
            Ok(scalpel::checkpoint::TensorEdit::Keep)
        }
    };
    let err = scalpel::checkpoint::write_checkpoint(&model, &out, &options, &Silent, &failing).unwrap_err();
    assert!(err.to_string().contains("simulated failure"));
    assert!(!out.exists());
    assert!(entries(tmp.path()).iter().all(|n| !n.starts_with(".scalpel-tmp-")), "temp folder removed");
}

#[test]
fn unknown_architectures_and_missing_writers_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture(tmp.path(), "llama", "llama", &FixtureOptions::default());
    let config_path = src.join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["model_type"] = serde_json::json!("mamba");
    config["architectures"] = serde_json::json!(["MambaForCausalLM"]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = ModelDir::open(&src).unwrap_err().to_string();
    assert!(err.contains("mamba") && err.contains("config.json") && err.contains("qwen2"), "{err}");

    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    config["num_hidden_layers"] = serde_json::json!(9);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = ModelDir::open(&src).unwrap_err().to_string();
    assert!(err.contains("model.layers.") && err.contains("not found"), "{err}");
}
