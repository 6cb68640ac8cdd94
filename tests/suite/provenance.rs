//! What an edited checkpoint records of where it came from: the inputs' names, sizes and
//! content hashes and scalpel's version, and local paths only with `--record-paths`; readers of
//! the record (`verify` with λ ≠ 1, `export --adapter`) take the original from the user and check
//! it against the record, and still read records that hold paths (written by older versions).

use crate::common;

use scalpel::checkpoint::{model_hash, ModelDir};
use scalpel::fixture::FixtureOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scalpel(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalpel")).args(args).arg("--quiet").output().expect("scalpel runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "scalpel panicked on {args:?}:\n{text}");
    (out.status.success(), text)
}

fn ok(args: &[&str]) -> String {
    let (ok, text) = scalpel(args);
    assert!(ok, "scalpel {args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str]) -> String {
    let (ok, text) = scalpel(args);
    assert!(!ok, "scalpel {args:?} succeeded:\n{text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fixture model and directions file in a fresh temporary folder (absolute paths).
fn setup(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let options = FixtureOptions { seed, ..FixtureOptions::default() };
    let model = common::fixture(tmp.path(), "source-model", "llama", &options);
    let spec = ModelDir::open(&model).unwrap().spec;
    let dirs = common::directions(tmp.path(), spec.hidden_size, spec.num_layers, 1, 1);
    (tmp, model, dirs)
}

/// Every file under `dir` (or `dir` itself, a file) with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if dir.is_file() {
        return vec![(dir.to_path_buf(), std::fs::read(dir).unwrap())];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.extend(files(&entry.unwrap().path()));
    }
    out
}

/// The files (of `outputs`) whose bytes contain `needle`.
fn holding(outputs: &[&Path], needle: &str) -> Vec<String> {
    let needle = needle.as_bytes();
    outputs
        .iter()
        .flat_map(|o| files(o))
        .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(path, _)| path.display().to_string())
        .collect()
}

/// The local paths a careless record would leak: the temporary folder (model, directions and
/// outputs lie in it), the binary and the source tree it was built in.
fn local_paths(tmp: &Path) -> Vec<String> {
    let bin = Path::new(env!("CARGO_BIN_EXE_scalpel"));
    let mut paths = vec![
        tmp.display().to_string(),
        std::fs::canonicalize(tmp).unwrap().display().to_string(),
        bin.display().to_string(),
        bin.parent().unwrap().display().to_string(),
        env!("CARGO_MANIFEST_DIR").to_string(),
    ];
    paths.sort();
    paths.dedup();
    paths
}

fn record(edited: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(edited.join("scalpel_edit.json")).unwrap()).unwrap()
}

#[test]
fn an_edit_records_names_sizes_and_hashes_and_paths_only_when_asked() {
    let (tmp, model, dirs) = setup(0);
    let t = tmp.path();
    let (out, adapter, gguf) = (t.join("edited"), t.join("adapter"), t.join("edited.gguf"));
    ok(&[
        "ablate",
        s(&model),
        "--directions",
        s(&dirs),
        "--out",
        s(&out),
        "--adapter",
        s(&adapter),
        "--gguf",
        s(&gguf),
    ]);
    let outputs = [out.as_path(), adapter.as_path(), gguf.as_path()];
    assert!(files(&out).len() >= 5, "the edited folder holds its files");
    for path in local_paths(t) {
        let leaks = holding(&outputs, &path);
        assert!(leaks.is_empty(), "{path} is written into {leaks:?}");
    }
    let r = record(&out);
    assert_eq!(r["source_model"], "source-model");
    assert_eq!(r["source"]["name"], "source-model");
    assert_eq!(r["source"]["hash"], model_hash(&model).unwrap().as_str());
    assert_eq!(r["source"]["bytes"], std::fs::metadata(model.join("model.safetensors")).unwrap().len());
    assert_eq!(r["directions"]["name"], dirs.file_name().unwrap().to_str().unwrap());
    assert_eq!(r["directions"]["bytes"], std::fs::metadata(&dirs).unwrap().len());
    assert!(r["source"].get("path").is_none() && r["directions"].get("path").is_none(), "{r:#}");
    assert_eq!(r["scalpel_version"], env!("CARGO_PKG_VERSION"));
    assert!(r["command"].as_str().unwrap().starts_with("scalpel ablate source-model --directions"), "{r:#}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains(r["source"]["hash"].as_str().unwrap()), "the card names the source's hash:\n{card}");

    let (out2, adapter2, gguf2) = (t.join("edited-paths"), t.join("adapter-paths"), t.join("paths.gguf"));
    ok(&[
        "ablate",
        s(&model),
        "--directions",
        s(&dirs),
        "--out",
        s(&out2),
        "--record-paths",
        "--adapter",
        s(&adapter2),
        "--gguf",
        s(&gguf2),
    ]);
    let real = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
    let r = record(&out2);
    assert_eq!(r["source_model"], real(&model).as_str());
    assert_eq!(r["source"]["path"], real(&model).as_str());
    assert_eq!(r["directions"]["path"], real(&dirs).as_str());
    assert!(r["command"].as_str().unwrap().starts_with(env!("CARGO_BIN_EXE_scalpel")), "{r:#}");
    for (needle, file) in [
        (real(&model), out2.join("model.safetensors")),
        (real(&dirs), out2.join("model.safetensors")),
        (env!("CARGO_BIN_EXE_scalpel").to_string(), out2.join("README.md")),
        (real(&model), adapter2.join("adapter_config.json")),
        (real(&model), gguf2.clone()),
    ] {
        assert!(!holding(&[file.as_path()], &needle).is_empty(), "{} lacks {needle}", file.display());
    }
}

#[test]
fn verify_with_a_partial_strength_takes_the_original_from_the_user_and_checks_it() {
    let (tmp, model, dirs) = setup(0);
    let t = tmp.path();
    let out = t.join("edited");
    ok(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out), "--strength", "0.5"]);
    let err = fails(&["verify", s(&out), "--directions", s(&dirs)]);
    assert!(err.contains("needs the original model") && err.contains("--original"), "{err}");
    assert!(err.contains("source-model") && err.contains(&model_hash(&model).unwrap()), "names the original: {err}");
    let good = ok(&["verify", s(&out), "--directions", s(&dirs), "--original", s(&model)]);
    assert!(good.contains("0 outside their bound"), "{good}");
    // A copy elsewhere, under another name, is the same model.
    let copy = t.join("moved").join("renamed");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    ok(&["verify", s(&out), "--directions", s(&dirs), "--original", s(&copy)]);
    // Another model of the same architecture is refused by its hash, before any ratio is read.
    let other = common::fixture(t, "other-model", "llama", &FixtureOptions { seed: 9, ..FixtureOptions::default() });
    let err = fails(&["verify", s(&out), "--directions", s(&dirs), "--original", s(&other)]);
    assert!(err.contains("is not the original model the edit record names"), "{err}");
    assert!(err.contains("source-model") && err.contains("other-model"), "{err}");
    // The adapter export takes its base and directions the same way.
    let adapter = t.join("adapter");
    let err = fails(&["export", s(&out), "--adapter", s(&adapter)]);
    assert!(err.contains("pass it with --base"), "{err}");
    let err = fails(&["export", s(&out), "--adapter", s(&adapter), "--base", s(&other), "--directions", s(&dirs)]);
    assert!(err.contains("is not the base model the edit record names"), "{err}");
    let spec = ModelDir::open(&model).unwrap().spec;
    let other_dirs = common::directions(&t.join("moved"), spec.hidden_size, spec.num_layers, 2, 1);
    let err =
        fails(&["export", s(&out), "--adapter", s(&adapter), "--base", s(&model), "--directions", s(&other_dirs)]);
    assert!(err.contains("is not the directions file the edit record names"), "{err}");
    ok(&["export", s(&out), "--adapter", s(&adapter), "--base", s(&copy), "--directions", s(&dirs)]);
    assert!(adapter.join("adapter_config.json").is_file());

    // With --record-paths the record finds the original itself.
    let recorded = t.join("edited-paths");
    ok(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&recorded), "--strength", "0.5", "--record-paths"]);
    ok(&["verify", s(&recorded), "--directions", s(&dirs)]);
}

#[test]
fn records_that_hold_the_source_path_are_still_read() {
    let (tmp, model, dirs) = setup(0);
    let t = tmp.path();
    let out = t.join("edited");
    ok(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out), "--strength", "0.5"]);
    // As versions before the inputs' identities wrote it: paths, no `source`/`directions`.
    let mut r = record(&out);
    let fields = r.as_object_mut().unwrap();
    fields.remove("source");
    fields.remove("directions");
    fields.insert("source_model".into(), s(&model).into());
    fields.insert("directions_file".into(), s(&dirs).into());
    std::fs::write(out.join("scalpel_edit.json"), serde_json::to_string_pretty(&r).unwrap()).unwrap();
    let good = ok(&["verify", s(&out), "--directions", s(&dirs)]);
    assert!(good.contains("0 outside their bound"), "{good}");
    let adapter = t.join("adapter");
    ok(&["export", s(&out), "--adapter", s(&adapter)]);
    assert!(adapter.join("adapter_model.safetensors").is_file());
    // Without identities there is nothing to check a given original against: it is used as given.
    ok(&["verify", s(&out), "--directions", s(&dirs), "--original", s(&model)]);
}

#[test]
fn probe_and_svd_outputs_name_the_model_without_its_path() {
    let (tmp, model, _) = setup(1);
    let t = tmp.path();
    let (probe, svd) = (t.join("probe"), t.join("svd"));
    // Prompt files in the temporary folder: their paths must not be written either.
    let prompts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/prompts");
    let (harmful, harmless) = (t.join("harmful.txt"), t.join("harmless.txt"));
    std::fs::copy(prompts.join("harmful_train.txt"), &harmful).unwrap();
    std::fs::copy(prompts.join("harmless_train.txt"), &harmless).unwrap();
    ok(&["probe", s(&model), "--out", s(&probe), "--limit", "6", "--harmful", s(&harmful), "--harmless", s(&harmless)]);
    ok(&["svd", s(&model), "--out", s(&svd)]);
    let outputs = [probe.as_path(), svd.as_path()];
    for path in local_paths(t) {
        let leaks = holding(&outputs, &path);
        assert!(leaks.is_empty(), "{path} is written into {leaks:?}");
    }
    assert!(!holding(&[probe.join("report.md").as_path()], "source-model").is_empty(), "the report names the model");
}
