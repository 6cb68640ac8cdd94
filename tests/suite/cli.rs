//! The command line end to end: fixture → inspect → ablate (defaults) → verify, and errors.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn scalpel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalpel")).args(args).output().expect("scalpel runs")
}

fn ok(args: &[&str]) -> String {
    let out = scalpel(args);
    assert!(out.status.success(), "scalpel {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn fails(args: &[&str]) -> String {
    let out = scalpel(args);
    assert!(!out.status.success(), "scalpel {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn fixture_inspect_ablate_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("gemma2");
    ok(&["fixture", "gemma2", "--out", s(&model), "--layers", "3"]);
    let inspect = ok(&["inspect", s(&model)]);
    assert!(
        inspect.contains("gemma2") && inspect.contains("tied head    yes") && inspect.contains("post-norms"),
        "{inspect}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&model), "--json"])).unwrap();
    assert_eq!(json["spec"]["num_layers"], 3);
    assert_eq!(json["writers"]["attn"].as_array().unwrap().len(), 3);

    let dirs = common::directions(tmp.path(), 64, 3, 1, 2);
    let out = tmp.path().join("edited");
    let log = ok(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out)]);
    for default in ["all 3", "`resid_pre.2` for every edit", "embed, attn, mlp", "strength λ    1", "tied"] {
        assert!(log.contains(default), "ablate should print `{default}`:\n{log}");
    }
    assert!(out.join("README.md").is_file() && out.join("scalpel_edit.json").is_file());
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("resid_pre.2") && card.contains("γ ⊙ r"), "{card}");
    let verify = ok(&["verify", s(&out), "--directions", s(&dirs)]);
    assert!(verify.contains("0 outside their bound"), "{verify}");
    // The original does not pass.
    let err = fails(&["verify", s(&model), "--directions", s(&dirs)]);
    assert!(err.contains("verification failed"), "{err}");
    // Different directions than the edit's record are refused.
    let other = tmp.path().join("other.safetensors");
    let entry = scalpel::directions::Direction { name: "resid_pre.2".into(), rows: vec![common::unit_vector(64, 999)] };
    let meta = std::collections::BTreeMap::from([("recommended_layer".to_string(), "2".to_string())]);
    scalpel::directions::DirectionsFile::save(&other, &[entry], &meta).unwrap();
    let err = fails(&["verify", s(&out), "--directions", s(&other)]);
    assert!(err.contains("differs from the directions used"), "{err}");
    // Existing output without --force; into the input folder.
    assert!(fails(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out)]).contains("--force"));
    assert!(fails(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&model), "--force"]).contains("overlaps"));
    // Selection flags.
    let out2 = tmp.path().join("edited2");
    let log = ok(&[
        "ablate",
        s(&model),
        "--directions",
        s(&dirs),
        "--out",
        s(&out2),
        "--layers",
        "1..",
        "--targets",
        "attn",
        "--direction-layer",
        "0",
        "--norm-preserve",
    ]);
    assert!(log.contains("[1, 2]") && log.contains("`resid_pre.0`") && log.contains("norm preserve yes"), "{log}");
    assert!(fails(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out2), "--targets", "mlp,bogus"])
        .contains("bogus"));
}

#[test]
fn help_reads_well() {
    let help = ok(&["--help"]);
    for cmd in ["inspect", "ablate", "verify", "fixture"] {
        assert!(help.contains(cmd), "{help}");
    }
    let ablate = ok(&["ablate", "--help"]);
    for flag in [
        "--directions",
        "--out",
        "--layers",
        "--direction-layer",
        "--per-layer",
        "--targets",
        "--strength",
        "--norm-preserve",
        "--untie",
        "--force",
    ] {
        assert!(ablate.contains(flag), "ablate --help lacks {flag}");
    }
    assert!(fails(&["fixture", "mamba", "--out", "x"]).contains("unknown family"));
    // Scripts read the family list from here (scripts/check_fixtures.py).
    let fixture = ok(&["fixture", "--help"]).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(fixture.contains(&format!("model_type: {}", scalpel::fixture::FAMILIES.join(", "))), "{fixture}");
}

#[test]
fn generate_and_chat_stream_answers_and_stop_at_stop_strings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(&["fixture", "llama", "--out", s(&model)]);
    let answer = |extra: &[&str]| {
        let mut args = vec!["generate", s(&model), "--prompt", "Tell me a story", "--max-tokens", "16"];
        args.extend_from_slice(extra);
        let out = scalpel(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().strip_suffix('\n').expect("a final newline").to_string()
    };
    let full = answer(&[]);
    assert!(full.chars().count() >= 4, "the fixture answers something: {full:?}");
    assert_eq!(answer(&[]), full, "greedy generation is deterministic");
    // A stop string from the middle of the answer: the answer ends just before its first occurrence.
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    assert_eq!(answer(&["--stop", &stop]), expected);
    assert_eq!(answer(&["--stop", "text that never appears"]), full);

    // chat: one turn from stdin, then /quit; the answer is the same greedy text.
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["chat", s(&model), "--max-tokens", "16", "--stop", &stop])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Tell me a story\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("\n> {expected}\n\n> "), "chat output");
}

#[test]
fn generate_json_gives_the_prompt_and_answer_ids_its_text_and_the_first_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(&["fixture", "qwen2", "--out", s(&model)]);
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", s(&model), "--prompt", "Tell me a story", "--raw", "--max-tokens", "8"];
        args.extend_from_slice(extra);
        let out = scalpel(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    let encoder = scalpel::prompts::PromptEncoder::from_model_dir(
        &model,
        scalpel::prompts::PromptFormat::Raw { trailing_newline: true },
    )
    .unwrap();
    let ids = |key: &str| -> Vec<u32> { serde_json::from_value(json[key].clone()).unwrap() };
    assert_eq!(ids("prompt_ids"), encoder.encode("Tell me a story").unwrap());
    let answer = ids("ids");
    assert!(!answer.is_empty() && answer.len() <= 8, "{json}");
    assert_eq!(json["text"], encoder.decode(&answer).unwrap());
    assert_eq!(json["stopped"], answer.len() < 8);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let logits = json["first_logits"].as_array().unwrap();
    assert_eq!(serde_json::json!(logits.len()), config["vocab_size"]);
    let top = (0..logits.len()).max_by(|&a, &b| logits[a].as_f64().partial_cmp(&logits[b].as_f64()).unwrap());
    assert_eq!(top, Some(answer[0] as usize), "greedy takes the top first-step logit");
    assert!(fails(&["generate", s(&model), "--prompt", "x", "--json", "--stop", "y"]).contains("cannot be used"));
}

/// An old spelling still works and says, on one warning line, what to write instead.
fn warns(log: &str, old: &str, new: &str) {
    assert!(
        log.lines().any(|l| l.starts_with("warning:") && l.contains(old) && l.contains(new)),
        "expected a warning that {old} is now {new}:\n{log}"
    );
}

#[test]
fn svd_takes_targets_and_the_old_writers_flag_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(&["fixture", "llama", "--out", s(&model), "--layers", "2"]);
    let log = ok(&["svd", s(&model), "--out", s(&tmp.path().join("a")), "--top-k", "2"]);
    assert!(log.contains("analysed 4 writers"), "attn and mlp by default:\n{log}");
    let log = ok(&["svd", s(&model), "--out", s(&tmp.path().join("b")), "--top-k", "2", "--targets", "mlp,embed"]);
    assert!(log.contains("analysed 3 writers") && !log.contains("warning:"), "{log}");
    let log = ok(&["svd", s(&model), "--out", s(&tmp.path().join("c")), "--top-k", "2", "--writers", "mlp"]);
    warns(&log, "--writers", "--targets");
    assert!(log.contains("analysed 2 writers"), "{log}");
    let c = s(&tmp.path().join("d")).to_string();
    assert!(fails(&["svd", s(&model), "--out", &c, "--targets", "mlp", "--writers", "attn"]).contains("cannot be used"));
    assert!(fails(&["svd", s(&model), "--out", &c, "--targets", "attn,bogus"]).contains("bogus"));
}

#[test]
fn eval_and_compare_write_their_reports_into_the_out_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(&["fixture", "llama", "--out", s(&model)]);
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "hello\nhow are you\n").unwrap();
    let sets = ["--harmful", s(&prompts), "--harmless", s(&prompts), "--max-tokens", "2"];
    let eval = |extra: &[&str]| -> Output {
        let mut args = vec!["eval", s(&model)];
        args.extend_from_slice(&sets);
        args.extend_from_slice(extra);
        scalpel(&args)
    };
    let text = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);

    let dir = tmp.path().join("eval");
    let run = eval(&["--original", s(&model), "--out", s(&dir)]);
    assert!(run.status.success() && !text(&run).contains("warning:"), "{}", text(&run));
    let md = std::fs::read_to_string(dir.join("eval.md")).unwrap();
    assert!(md.starts_with("# Evaluation of") && md.contains("hello"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    assert!(json.is_object(), "{json}");
    // An existing folder is replaced only with --force.
    let again = eval(&["--out", s(&dir)]);
    assert!(!again.status.success() && text(&again).contains("--force"), "{}", text(&again));
    assert!(eval(&["--out", s(&dir), "--force"]).status.success());

    // The old spellings: --baseline and --out FILE.md.
    let file = tmp.path().join("r.md");
    let old = eval(&["--baseline", s(&model), "--out", s(&file)]);
    let log = text(&old);
    assert!(old.status.success(), "{log}");
    warns(&log, "--baseline", "--original");
    warns(&log, "r.md", "--out DIR");
    assert!(std::fs::read_to_string(&file).unwrap().starts_with("# Evaluation of"));

    // compare EDITED --original ORIGINAL: the original on the left.
    let cmp = tmp.path().join("cmp");
    let limit = ["--prompts", s(&prompts), "--limit", "2", "--max-tokens", "2"];
    let mut args = vec!["compare", s(&model), "--original", s(&model), "--out", s(&cmp)];
    args.extend_from_slice(&limit);
    let log = ok(&args);
    assert!(!log.contains("warning:"), "{log}");
    assert!(std::fs::read_to_string(cmp.join("compare.md")).unwrap().contains("Verdicts by the"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cmp.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2, "{json}");
    assert!(json["rows"][0]["right_verdict"].is_string(), "{json}");
    // The old positional form.
    let mut args = vec!["compare", s(&model), s(&model)];
    args.extend_from_slice(&limit);
    warns(&ok(&args), "compare ORIGINAL EDITED", "--original ORIGINAL");
    // Neither an original nor an intervention: nothing to compare with.
    let mut args = vec!["compare", s(&model)];
    args.extend_from_slice(&limit);
    assert!(fails(&args).contains("--original"));
}

#[test]
fn fixture_and_import_take_store_dtype_and_the_old_dtype_flag_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let (new, old) = (tmp.path().join("new"), tmp.path().join("old"));
    let log = ok(&["fixture", "llama", "--out", s(&new), "--store-dtype", "bf16"]);
    assert!(!log.contains("warning:"), "{log}");
    assert!(ok(&["inspect", s(&new)]).contains("BF16"));
    warns(&ok(&["fixture", "llama", "--out", s(&old), "--dtype", "bf16"]), "--dtype", "--store-dtype");
    assert!(ok(&["inspect", s(&old)]).contains("BF16"));
    assert!(import_help_names_store_dtype());
}

fn import_help_names_store_dtype() -> bool {
    let help = ok(&["import", "--help"]);
    help.contains("--store-dtype") && !help.contains("--dtype ")
}

#[test]
fn probe_metadata_is_spelled_as_the_command_line_takes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    ok(&["fixture", "llama", "--out", s(&model)]);
    let meta =
        |dir: &Path| scalpel::directions::DirectionsFile::load(&dir.join("directions.safetensors")).unwrap().metadata;
    // The old rule name is written under its name.
    let first = tmp.path().join("p1");
    ok(&["probe", s(&model), "--out", s(&first), "--limit", "6", "--rule", "research-note"]);
    let m = meta(&first);
    assert_eq!(m["rule"], "low-variance");
    assert_eq!(m["prompt_format"], "chat");
    // What was written is accepted back by the command line and written the same.
    let second = tmp.path().join("p2");
    ok(&["probe", s(&model), "--out", s(&second), "--limit", "6", "--rule", &m["rule"], "--system", "Be brief."]);
    let m2 = meta(&second);
    assert_eq!(m2["rule"], "low-variance");
    assert_eq!(m2["prompt_format"], "--system \"Be brief.\"");
    let third = tmp.path().join("p3");
    ok(&["probe", s(&model), "--out", s(&third), "--limit", "6", "--raw", "--no-newline"]);
    assert_eq!(meta(&third)["prompt_format"], "--raw --no-newline");
}

#[test]
fn a_mixture_of_experts_is_inspected_ablated_and_verified_expert_by_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("qwen2_moe");
    ok(&["fixture", "qwen2_moe", "--out", s(&model)]);
    let inspect = ok(&["inspect", s(&model)]);
    for line in [
        "mlp expert ×4",
        "mlp shared expert ×1",
        "model.layers.1.mlp.experts.0.down_proj.weight",
        "router       input side, never edited, e.g. model.layers.1.mlp.gate.weight",
    ] {
        assert!(inspect.contains(line), "inspect should print `{line}`:\n{inspect}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&model), "--json"])).unwrap();
    let experts = json["writers"]["mlp expert"].as_array().unwrap();
    let parts: Vec<&str> = experts.iter().map(|w| w["part"].as_str().unwrap()).collect();
    assert_eq!(parts, ["expert 0", "expert 1", "expert 2", "expert 3"]);

    let dirs = common::directions(tmp.path(), 64, 2, 1, 1);
    let out = tmp.path().join("edited");
    ok(&["ablate", s(&model), "--directions", s(&dirs), "--out", s(&out)]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scalpel_edit.json")).unwrap()).unwrap();
    let recorded: Vec<&str> =
        record["edits"].as_array().unwrap().iter().map(|e| e["tensor"].as_str().unwrap()).collect();
    for e in 0..4 {
        let name = format!("model.layers.1.mlp.experts.{e}.down_proj.weight");
        assert!(recorded.contains(&name.as_str()), "{name} is recorded: {recorded:?}");
    }
    assert!(recorded.contains(&"model.layers.1.mlp.shared_expert.down_proj.weight"));
    assert!(!recorded.iter().any(|t| t.ends_with("mlp.gate.weight") || t.contains("shared_expert_gate")));
    let verify = ok(&["verify", s(&out), "--directions", s(&dirs)]);
    assert!(verify.contains("0 outside their bound") && verify.contains("expert 3"), "{verify}");
}
