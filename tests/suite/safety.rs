//! Scalpel never destroys what it did not write, never panics on a bad file, and never calls a
//! broken model good. One test per defect found by trying careless and hostile inputs; each
//! failed before its fix.

use crate::common;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use proptest::prelude::*;
use scalpel::checkpoint::{unused_tensors, ModelDir, MARKER_FILE};
use scalpel::directions::DirectionsFile;
use scalpel::fixture::FixtureOptions;
use scalpel::import::{import_gguf, ImportOptions};
use scalpel::progress::Silent;
use scalpel::prompts::{ChatTemplate, Message};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scalpel_in(dir: Option<&Path>, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scalpel"));
    command.args(args).arg("--quiet");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command.output().expect("scalpel runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "scalpel panicked on {args:?}:\n{text}");
    (out.status.success(), text)
}

fn scalpel(args: &[&str]) -> (bool, String) {
    scalpel_in(None, args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A llama fixture and a directions file for it.
fn model_and_directions(dir: &Path) -> (PathBuf, PathBuf) {
    let model = common::fixture(dir, "model", "llama", &FixtureOptions::default());
    let spec = ModelDir::open(&model).unwrap().spec;
    let dirs = common::directions(dir, spec.hidden_size, spec.num_layers, 1, 1);
    (model, dirs)
}

/// A copy of the fixture at `model` with config.json changed by `edit`.
fn with_config(model: &Path, out: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    for entry in std::fs::read_dir(model).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    let path = out.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    out.to_path_buf()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Item 1: `--force` replaces only a folder scalpel wrote, never the current folder, a folder
/// holding an input, a git work tree or a folder of foreign files.
#[test]
fn force_replaces_only_folders_scalpel_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = model_and_directions(tmp.path());
    let ablate = |out: &Path, cwd: Option<&Path>| {
        scalpel_in(cwd, &["ablate", s(&model), "--directions", s(&dirs), "--out", s(out), "--force"])
    };
    // A folder of someone else's files.
    let foreign = tmp.path().join("work");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let (ok, log) = ablate(&foreign, None);
    assert!(!ok && log.contains("did not write it") && log.contains("work"), "{log}");
    assert_eq!(common::entries(&foreign), ["notes.txt"]);
    // A folder scalpel wrote is replaced.
    let edited = tmp.path().join("edited");
    assert!(ablate(&edited, None).0);
    assert!(edited.join(MARKER_FILE).is_file());
    let (ok, log) = ablate(&edited, None);
    assert!(ok, "{log}");
    // ... but not while it is the current folder.
    let before = snapshot(&edited);
    let (ok, log) = ablate(Path::new("."), Some(&edited));
    assert!(!ok && log.contains("current folder"), "{log}");
    assert_eq!(snapshot(&edited), before);
    // ... nor when it holds an input (the directions it reads).
    let probe_like = tmp.path().join("probe");
    assert!(ablate(&probe_like, None).0);
    let inner_dirs = probe_like.join("directions.safetensors");
    std::fs::copy(&dirs, &inner_dirs).unwrap();
    let (ok, log) = scalpel(&["ablate", s(&model), "--directions", s(&inner_dirs), "--out", s(&probe_like), "--force"]);
    assert!(!ok && log.contains("overlaps"), "{log}");
    assert!(inner_dirs.is_file());
    // ... nor the model's own folder or its parent.
    for out in [model.as_path(), tmp.path()] {
        let (ok, log) = ablate(out, None);
        assert!(!ok && log.contains("overlaps"), "{log}");
    }
    assert!(model.join("config.json").is_file());
    // ... nor a git work tree, even with a stamp.
    std::fs::create_dir(edited.join(".git")).unwrap();
    let (ok, log) = ablate(&edited, None);
    assert!(!ok && log.contains("git work tree"), "{log}");
    // A plain file is never replaced.
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, b"keep").unwrap();
    assert!(!ablate(&file, None).0);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

/// Item 1: `import G/x.gguf --out G --force` no longer deletes x.gguf.
#[test]
fn import_never_replaces_the_folder_of_its_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let folder = tmp.path().join("g");
    std::fs::create_dir(&folder).unwrap();
    let gguf = folder.join("x.gguf");
    crate::import_roundtrip::export(&ModelDir::open(&model).unwrap(), &gguf, GgmlDType::F32);
    std::fs::write(folder.join(MARKER_FILE), b"{}").unwrap();
    let (ok, log) = scalpel(&["import", s(&gguf), "--out", s(&folder), "--force"]);
    assert!(!ok && log.contains("overlaps"), "{log}");
    assert!(gguf.is_file());
}

fn write_recipe(dir: &Path, model: &Path, out: &str, extra: &str) -> PathBuf {
    let path = dir.join("recipes").join("r.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!("[model]\npath = {:?}\n[prompts]\nlimit = 4\n[output]\ndir = {out:?}\n{extra}", s(model)),
    )
    .unwrap();
    path
}

/// Item 2: `scalpel run` writes a step's output only where its stamps say it is its own, and
/// refuses an empty `output.dir`.
#[test]
fn run_replaces_only_outputs_its_stamps_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    // A folder of foreign files.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("report.md"), b"my report").unwrap();
    let recipe = write_recipe(tmp.path(), &model, s(&out), "");
    let (ok, log) = scalpel(&["run", s(&recipe)]);
    assert!(!ok && log.contains("did not write") && log.contains("report.md"), "{log}");
    assert_eq!(std::fs::read(out.join("report.md")).unwrap(), b"my report");
    // A run folder whose `probe` the stamps do not record.
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("probe")).unwrap();
    std::fs::write(run.join(".scalpel-steps.json"), b"{}").unwrap();
    std::fs::write(run.join("probe").join("mine.txt"), b"x").unwrap();
    let recipe = write_recipe(tmp.path(), &model, s(&run), "");
    let (ok, log) = scalpel(&["run", s(&recipe)]);
    assert!(!ok && log.contains("probe") && log.contains("not written by"), "{log}");
    assert_eq!(common::entries(&run.join("probe")), ["mine.txt"]);
    // An empty output.dir.
    let recipe = write_recipe(tmp.path(), &model, "", "");
    let (ok, log) = scalpel(&["run", s(&recipe)]);
    assert!(!ok && log.contains("output.dir is empty"), "{log}");
    // A folder outside the recipe's repository is named.
    let recipe = write_recipe(tmp.path(), &model, "../../outside-x", "[probe]\nbatch = 0\n");
    let (ok, log) = scalpel(&["run", s(&recipe)]);
    assert!(!ok && log.contains("probe.batch"), "{log}");
    assert!(!tmp.path().parent().unwrap().join("outside-x").exists());
}

/// Replace the tensor `name` of the single-file fixture at `dir` by `shape` (zeros).
fn reshape_tensor(dir: &Path, name: &str, shape: &[usize]) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let zeros = vec![0u8; shape.iter().product::<usize>() * 4];
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, view) in st.tensors() {
        if n == name {
            owned.push((n.clone(), safetensors::Dtype::F32, shape.to_vec(), zeros.clone()));
        } else {
            owned.push((n.clone(), view.dtype(), view.shape().to_vec(), view.data().to_vec()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, sh, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, sh.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Item 3: a writer with a zero-size dimension, and a config whose vocabulary does not match the
/// embedding, are errors naming the tensor, not a panic or a "successful" edit.
#[test]
fn shapes_are_checked_against_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = model_and_directions(tmp.path());
    let spec = ModelDir::open(&model).unwrap().spec;
    let zero = with_config(&model, &tmp.path().join("zero"), |_| {});
    let down = "model.layers.0.mlp.down_proj.weight";
    reshape_tensor(&zero, down, &[spec.hidden_size, 0]);
    let out = tmp.path().join("out");
    let (ok, log) = scalpel(&["ablate", s(&zero), "--directions", s(&dirs), "--out", s(&out)]);
    assert!(!ok && log.contains(down) && log.contains("zero-size"), "{log}");
    assert!(!out.exists());
    let vocab = with_config(&model, &tmp.path().join("vocab"), |c| c["vocab_size"] = 1_000_000.into());
    let (ok, log) = scalpel(&["ablate", s(&vocab), "--directions", s(&dirs), "--out", s(&out)]);
    assert!(!ok && log.contains("embed_tokens") && log.contains("config.json implies"), "{log}");
    assert!(!out.exists());
}

/// Gemma 4's per-layer inputs: a projection of the wrong shape and a table
/// shorter than the prompt's token ids are errors naming what is wrong, not a panic.
#[test]
fn per_layer_input_tensors_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let options = scalpel::fixture::FixtureOptions { num_layers: 4, ..Default::default() };
    let model = common::fixture(tmp.path(), "e", common::GEMMA4_E, &options);
    let generate = |dir: &Path| scalpel(&["generate", s(dir), "--prompt", "hello there", "--max-tokens", "2"]);
    let projection = "model.per_layer_model_projection.weight";
    let shape = with_config(&model, &tmp.path().join("shape"), |_| {});
    reshape_tensor(&shape, projection, &[16, 64]);
    let (ok, log) = generate(&shape);
    assert!(!ok && log.contains(projection) && log.contains("config.json implies"), "{log}");
    let table = "model.embed_tokens_per_layer.weight";
    let rows = with_config(&model, &tmp.path().join("rows"), |c| c["vocab_size_per_layer_input"] = 100.into());
    reshape_tensor(&rows, table, &[100, 32]);
    let (ok, log) = generate(&rows);
    assert!(!ok && log.contains("outside the per-layer input table (100 rows)"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Items 4 and 10: sizes beyond any model (a head_dim that wraps the shape product, a billion
/// layers) are refused before anything is allocated.
#[test]
fn huge_config_sizes_are_refused_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let cases: [(&str, serde_json::Value); 3] = [
        ("head_dim", serde_json::json!(9_223_372_036_854_775_824u64)),
        ("num_hidden_layers", serde_json::json!(1_000_000_000u64)),
        ("vocab_size", serde_json::json!(1_000_000_000_000u64)),
    ];
    for (i, (field, value)) in cases.into_iter().enumerate() {
        let dir = with_config(&model, &tmp.path().join(format!("c{i}")), |c| c[field] = value);
        let err = ModelDir::open(&dir).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("config.json"), "{err}");
        let out = tmp.path().join(format!("p{i}"));
        let (ok, log) = scalpel(&["probe", s(&dir), "--out", s(&out), "--limit", "2"]);
        assert!(!ok && log.contains(field), "{log}");
        assert!(!out.exists());
    }
}

/// A copy of the GGUF `src` with its metadata changed by `edit` and without tensor `drop`.
/// An edit of a GGUF file's metadata entries.
type MetaEdit = dyn Fn(&mut Vec<(String, Value)>);

fn rewrite_gguf(src: &Path, dst: &Path, edit: &MetaEdit, drop: Option<&str>) {
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut meta: Vec<(String, Value)> = content.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut meta);
    let mut names: Vec<&String> = content.tensor_infos.keys().filter(|n| Some(n.as_str()) != drop).collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> =
        names.iter().map(|n| (n.to_string(), content.tensor(&mut file, n, &Device::Cpu).unwrap())).collect();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &meta_refs, &tensor_refs).unwrap();
}

fn set(key: &'static str, value: Value) -> impl Fn(&mut Vec<(String, Value)>) {
    move |meta| {
        meta.retain(|(k, _)| k != key);
        meta.push((key.to_string(), value.clone()));
    }
}

/// Items 5, 6, 9, 13 and 16: GGUF files with a zero alignment, zero heads, a billion blocks,
/// a template that never finishes, or a missing tensor are clear errors naming the GGUF file
/// (not the staging folder), and nothing is written.
#[test]
fn bad_gguf_metadata_is_an_error_before_candle_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let good = tmp.path().join("good.gguf");
    crate::import_roundtrip::export(&ModelDir::open(&model).unwrap(), &good, GgmlDType::F32);
    let endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let cases: Vec<(&str, Box<MetaEdit>, Option<&str>, &str)> = vec![
        ("alignment", Box::new(set("general.alignment", Value::U32(0))), None, "general.alignment"),
        ("heads", Box::new(set("llama.attention.head_count", Value::U32(0))), None, "attention.head_count"),
        ("blocks", Box::new(set("llama.block_count", Value::U32(1_000_000_000))), None, "block_count"),
        ("template", Box::new(set("tokenizer.chat_template", Value::String(endless.into()))), None, "work limit"),
        ("missing", Box::new(|_: &mut Vec<(String, Value)>| {}), Some("blk.0.attn_q.weight"), "lacks the tensor"),
    ];
    for (name, edit, drop, expected) in cases {
        let gguf = tmp.path().join(format!("{name}.gguf"));
        rewrite_gguf(&good, &gguf, edit.as_ref(), drop);
        let out = tmp.path().join(format!("{name}-out"));
        let err = import_gguf(&gguf, &out, &ImportOptions::default(), &Silent).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains(&format!("{name}.gguf")), "{name}: {err}");
        assert!(!err.contains(".scalpel-tmp"), "{name}: names the staging folder: {err}");
        assert!(!out.exists(), "{name}");
        let (ok, log) = scalpel(&["import", s(&gguf), "--out", s(&out)]);
        assert!(!ok, "{name}: {log}");
    }
    assert!(common::entries(tmp.path()).iter().all(|e| !e.starts_with(".scalpel-tmp")));
}

/// Item 7: a NaN in a writer is refused by ablate (named), a NaN in an edited tensor fails
/// verify, a NaN elsewhere makes eval stop naming the prompt rather than report no refusals,
/// and `generate --alpha inf` is refused.
#[test]
fn non_finite_models_are_never_reported_good() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = model_and_directions(tmp.path());
    let m = ModelDir::open(&model).unwrap();
    let o_proj = "model.layers.1.self_attn.o_proj.weight";
    let mut values = m.checkpoint.read_f32(o_proj).unwrap().0;
    values[3] = f32::NAN;
    let broken = tmp.path().join("broken");
    common::replace_tensors(&model, &broken, &[(o_proj, &values)]);
    let out = tmp.path().join("out");
    let (ok, log) = scalpel(&["ablate", s(&broken), "--directions", s(&dirs), "--out", s(&out)]);
    assert!(!ok && log.contains(o_proj) && log.contains("non-finite"), "{log}");
    assert!(!out.exists());
    // An edit that later got a NaN in an edited tensor fails verification.
    let edited = tmp.path().join("edited");
    assert!(scalpel(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&edited)]).0);
    let e = ModelDir::open(&edited).unwrap();
    let mut values = e.checkpoint.read_f32(o_proj).unwrap().0;
    values[0] = f32::NAN;
    drop(e);
    let spoiled = tmp.path().join("spoiled");
    common::replace_tensors(&edited, &spoiled, &[(o_proj, &values)]);
    std::fs::copy(edited.join("scalpel_edit.json"), spoiled.join("scalpel_edit.json")).unwrap();
    let (ok, log) = scalpel(&["verify", s(&spoiled), "--directions", s(&dirs)]);
    assert!(!ok, "verify passed a NaN tensor:\n{log}");
    // A NaN outside the writers: eval names the prompt instead of counting no refusals.
    let q = "model.layers.0.self_attn.q_proj.weight";
    let mut values = m.checkpoint.read_f32(q).unwrap().0;
    values.iter_mut().take(10).for_each(|v| *v = f32::NAN);
    let nan_q = tmp.path().join("nan-q");
    common::replace_tensors(&model, &nan_q, &[(q, &values)]);
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "How do I pick a lock?\n").unwrap();
    let (ok, log) =
        scalpel(&["eval", s(&nan_q), "--harmful", s(&prompts), "--harmless", s(&prompts), "--max-tokens", "2"]);
    assert!(!ok && log.contains("How do I pick a lock?") && log.contains("not finite"), "{log}");
    let (ok, log) =
        scalpel(&["generate", s(&model), "--prompt", "hi", "--add", s(&dirs), "--alpha", "inf", "--layer", "0"]);
    assert!(!ok && log.contains("finite"), "{log}");
}

/// Item 8: a prompt longer than the context is an error naming it; generation stops at the
/// context length.
#[test]
fn prompts_and_generation_stay_within_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let short = with_config(&model, &tmp.path().join("short"), |c| c["max_position_embeddings"] = 24.into());
    let long = "word ".repeat(200);
    let (ok, log) = scalpel(&["generate", s(&short), "--prompt", &long, "--max-tokens", "2"]);
    assert!(!ok && log.contains("longer than the model's context") && log.contains("word word"), "{log}");
    let m = ModelDir::open(&short).unwrap();
    let decoder = scalpel::model::Decoder::load(&m, &Device::Cpu, candle_core::DType::F32).unwrap();
    let options = scalpel::model::GenerateOptions {
        max_tokens: 1000,
        sampling: scalpel::model::Sampling::default(),
        stop_ids: Vec::new(),
    };
    let prompt: Vec<u32> = (1..9).collect();
    let out = scalpel::model::generate(
        &decoder,
        &[prompt],
        0,
        &options,
        &scalpel::model::Interventions::none(),
        &mut |_, _| false,
    )
    .unwrap();
    assert!(out[0].ids.len() <= 24 - 8, "{} tokens generated past a context of 24", out[0].ids.len());
}

/// Item 9: chat templates have a work limit and an output limit.
#[test]
fn chat_templates_are_bounded() {
    let endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let err = ChatTemplate::from_source(endless.into(), None, None)
        .unwrap()
        .render(&[Message::user("hi")], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("work limit"), "{err}");
    let huge = format!("{{% for i in range(100000) %}}{}{{% endfor %}}", "x".repeat(100));
    let err = ChatTemplate::from_source(huge, None, None)
        .unwrap()
        .render(&[Message::user("hi")], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("output grew"), "{err}");
    // Real templates are far inside both limits.
    let qwen = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite/data/qwen2.5-chat-template.jinja"),
    )
    .unwrap();
    let many: Vec<Message> =
        (0..200).map(|i| if i % 2 == 0 { Message::user("q") } else { Message::assistant("a") }).collect();
    ChatTemplate::from_source(qwen, None, None).unwrap().render(&many, true).unwrap();
}

/// Item 11: side files are read with a size cap (config.json linked to /dev/zero).
#[cfg(unix)]
#[test]
fn endless_side_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let dir = with_config(&model, &tmp.path().join("zero"), |_| {});
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("config.json")).unwrap();
    let err = ModelDir::open(&dir).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("larger than"), "{err}");
}

/// Item 12: a later run removes the staging folders of processes that died (stamped with their
/// pid), and leaves folders without a stamp alone.
#[test]
fn stale_staging_folders_of_dead_processes_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = tmp.path().join(".scalpel-tmp-stale");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join(MARKER_FILE), format!("{{\"pid\": {dead}}}")).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 1024]).unwrap();
    let alive = tmp.path().join(".scalpel-tmp-alive");
    std::fs::create_dir(&alive).unwrap();
    std::fs::write(alive.join(MARKER_FILE), format!("{{\"pid\": {}}}", std::process::id())).unwrap();
    let unstamped = tmp.path().join(".scalpel-tmp-other");
    std::fs::create_dir(&unstamped).unwrap();
    let (ok, log) = scalpel(&["fixture", "llama", "--out", s(&tmp.path().join("m"))]);
    assert!(ok, "{log}");
    assert!(!stale.exists(), "the dead process's staging folder is still there");
    assert!(alive.exists() && unstamped.exists());
}

/// Ctrl-C and `kill` during a write remove the staging folder and leave no output. The source
/// model's README.md is a FIFO, which `ablate` opens to embed the original card after the
/// checkpoint is written and verified and before it is moved into place: the process waits
/// there until the test signals it, so the signal always lands mid-write, with the staging
/// folder full, whatever the machine's speed.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn a_signal_during_a_write_leaves_no_staging_folder_and_no_output() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = model_and_directions(tmp.path());
    let fifo = model.join("README.md");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let staging =
        |parent: &Path| common::entries(parent).into_iter().filter(|n| n.starts_with(".scalpel-tmp-")).count();
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let parent = tmp.path().join(format!("out-{signal}"));
        std::fs::create_dir(&parent).unwrap();
        let out = parent.join("edited");
        let mut child = Command::new(env!("CARGO_BIN_EXE_scalpel"))
            .args(["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out), "--quiet"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A writer can open the FIFO without blocking only once the reader is waiting on it;
        // keeping it open (and silent) holds the reader in `read` until the signal.
        let deadline = Instant::now() + Duration::from_secs(120);
        let held = loop {
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo) {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline && child.try_wait().unwrap().is_none() => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!("ablate never reached the card ({e}):\n{}", String::from_utf8_lossy(&out.stderr));
                }
            }
        };
        assert_eq!(staging(&parent), 1, "the write is staged while it waits");
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ablate did not exit within 60 s of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(held);
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        assert_eq!(status.code(), Some(code), "SIG{signal}: {log}");
        assert!(log.contains("the unfinished output was removed"), "{log}");
        assert_eq!(common::entries(&parent), Vec::<String>::new(), "SIG{signal} left files behind");
    }
}

/// Item 14: zero and nonsense numbers are refused by the flag parser, before anything is read.
#[test]
fn nonsense_numbers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, dirs) = model_and_directions(tmp.path());
    let m = s(&model);
    let out = tmp.path().join("out");
    let o = s(&out);
    let cases: Vec<Vec<&str>> = vec![
        vec!["probe", m, "--out", o, "--pca", "0"],
        vec!["probe", m, "--out", o, "--num-directions", "0"],
        vec!["probe", m, "--out", o, "--batch", "0"],
        vec!["eval", m, "--limit", "0"],
        vec!["generate", m, "--prompt", "hi", "--temperature", "nan"],
        vec!["generate", m, "--prompt", "hi", "--temperature=-1"],
        vec!["generate", m, "--prompt", "hi", "--top-p", "2"],
        vec!["generate", m, "--prompt", "hi", "--repeat-penalty", "0"],
        vec!["svd", m, "--out", o, "--top-k", "0"],
        vec!["search", m, "--directions", s(&dirs), "--out", o, "--trials", "0"],
        vec!["search", m, "--directions", s(&dirs), "--out", o, "--max-kl", "0"],
        vec!["search", m, "--directions", s(&dirs), "--out", o, "--max-kl", "nan"],
    ];
    for args in cases {
        let (ok, log) = scalpel(&args);
        assert!(!ok && (log.contains("must") || log.contains("invalid")), "{args:?}:\n{log}");
        assert!(!out.exists(), "{args:?} wrote output");
    }
    // Negative layers, as the help documents them.
    let edited = tmp.path().join("edited");
    let (ok, log) = scalpel(&["ablate", m, "--directions", s(&dirs), "--out", s(&edited), "--layers", "-1"]);
    assert!(ok, "{log}");
}

/// Item 15: a bad recipe value fails before the output folder exists or the probe runs.
#[test]
fn recipes_are_validated_whole_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let bad = ["[ablate]\nstrength = nan\n", "[eval]\nlimit = 0\n", "[search]\ntrials = 0\n", "[search]\nmax_kl = 0\n"];
    for (i, extra) in bad.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let recipe = write_recipe(tmp.path(), &model, s(&out), extra);
        let (ok, log) = scalpel(&["run", s(&recipe)]);
        assert!(!ok, "{extra}: {log}");
        assert!(!out.exists(), "{extra}: output.dir was created");
    }
}

/// Item 16: messages name the path and do not repeat their cause.
#[test]
fn messages_name_the_path_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = model_and_directions(tmp.path());
    let bad = with_config(&model, &tmp.path().join("badjson"), |_| {});
    std::fs::write(bad.join("config.json"), b"{ not json").unwrap();
    let (ok, log) = scalpel(&["inspect", s(&bad)]);
    assert!(!ok && log.contains("config.json"), "{log}");
    let line = log.lines().find(|l| l.contains("config.json")).unwrap();
    let cause = line.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "the cause is repeated: {line}");
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "hello\n").unwrap();
    let target = tmp.path().join("nodir").join("r.md");
    let (ok, log) = scalpel(&[
        "eval",
        s(&model),
        "--harmful",
        s(&prompts),
        "--harmless",
        s(&prompts),
        "--max-tokens",
        "1",
        "--out",
        s(&target),
    ]);
    assert!(!ok && log.contains("nodir"), "{log}");
}

/// Item 17: outputs follow the umask like any other file.
#[cfg(unix)]
#[test]
fn outputs_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    std::fs::write(&reference, b"").unwrap();
    let expected = std::fs::metadata(&reference).unwrap().permissions().mode() & 0o777;
    let (model, dirs) = model_and_directions(tmp.path());
    for file in [model.join("model.safetensors"), dirs] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "{}", file.display());
    }
}

/// Item 18: tensors the config does not use are named in a warning.
#[test]
fn unused_tensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let gemma2 = common::fixture(tmp.path(), "gemma2", "gemma2", &FixtureOptions::default());
    let as_llama = with_config(&gemma2, &tmp.path().join("as-llama"), |c| {
        c["model_type"] = "llama".into();
        c["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    });
    let m = ModelDir::open(&as_llama).unwrap();
    let unused = unused_tensors(&m);
    assert!(!unused.is_empty() && unused.iter().all(|n| n.contains("feedforward_layernorm")), "{unused:?}");
    let (_, log) = scalpel(&["inspect", s(&as_llama)]);
    assert!(log.contains("does not use") && log.contains(&unused[0]), "{log}");
    assert!(unused_tensors(&ModelDir::open(&gemma2).unwrap()).is_empty());
}

fn config_cases() -> impl Strategy<Value = (String, serde_json::Value)> {
    let field = prop::sample::select(vec![
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "max_position_embeddings",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
        "model_type",
        "rope_scaling",
    ]);
    let value = prop_oneof![
        any::<u64>().prop_map(serde_json::Value::from),
        (0u64..70).prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        Just(serde_json::Value::Null),
        Just(serde_json::json!("llama")),
        Just(serde_json::json!({"rope_type": "llama3", "factor": 0})),
        Just(serde_json::json!([1, 2])),
    ];
    (field.prop_map(str::to_string), value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Field replacements in config.json never panic: the model opens or is an error naming
    /// config.json or a tensor.
    #[test]
    fn mutated_configs_never_panic(cases in prop::collection::vec(config_cases(), 1..4)) {
        let tmp = tempfile::tempdir().unwrap();
        let model = common::fixture(tmp.path(), "m", "llama", &FixtureOptions { num_layers: 1, ..FixtureOptions::default() });
        let dir = with_config(&model, &tmp.path().join("c"), |c| {
            for (field, value) in &cases {
                c[field.as_str()] = value.clone();
            }
        });
        if let Err(e) = ModelDir::open(&dir) {
            let text = e.to_string();
            prop_assert!(text.contains("config.json") || text.contains("tensor") || text.contains("architecture"), "{}", text);
        }
    }

    /// Byte flips and truncations of a GGUF file never panic and never leave output.
    #[test]
    fn mutated_gguf_files_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let good = gguf_bytes();
        let mut bytes = good.clone();
        // Most of the header's interesting bytes lie in its first few kilobytes.
        let span = bytes.len().min(4096);
        for (at, value) in &flips {
            bytes[at.index(span)] = *value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let out = tmp.path().join("out");
        if import_gguf(&path, &out, &ImportOptions::default(), &Silent).is_err() {
            prop_assert!(!out.exists());
        }
        prop_assert!(common::entries(tmp.path()).iter().all(|e| !e.starts_with(".scalpel-tmp")));
    }

    /// Byte flips in a directions file never panic.
    #[test]
    fn mutated_directions_files_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let tmp = tempfile::tempdir().unwrap();
        let path = common::directions(tmp.path(), 16, 2, 2, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, value) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        std::fs::write(&path, &bytes).unwrap();
        let _ = DirectionsFile::load(&path);
    }
}

/// A valid GGUF of a one-layer llama fixture (made once per test process).
fn gguf_bytes() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let model = common::fixture(
                tmp.path(),
                "m",
                "llama",
                &FixtureOptions { num_layers: 1, ..FixtureOptions::default() },
            );
            let path = tmp.path().join("m.gguf");
            crate::import_roundtrip::export(&ModelDir::open(&model).unwrap(), &path, GgmlDType::F32);
            std::fs::read(path).unwrap()
        })
        .clone()
}
