//! `scalpel run` end to end: on a fixture recipe (fast, always) and on the demo model when it
//! is installed (scripts/fetch-demo-model.sh; CI installs it).

use crate::common;

use scalpel::checkpoint::Hub;
use scalpel::fixture::FixtureOptions;
use scalpel::pipeline::run_recipe;
use scalpel::progress::Silent;
use scalpel::recipe::Recipe;
use std::path::Path;

/// Fixtures are local folders: nothing is looked up on the hub.
fn hub() -> Hub {
    Hub { cache: std::env::temp_dir().join("scalpel-no-hub-cache"), offline: true }
}

fn recipe(dir: &Path, model: &Path, out: &Path, extra: &str) -> Recipe {
    let texts = dir.join("texts.txt");
    std::fs::write(&texts, "The sea was calm that morning.\nBread needs flour, water and time.\n").unwrap();
    let text = format!(
        "[model]\npath = {:?}\n[prompts]\nlimit = 8\n[probe]\nbatch = 4\n[eval]\nmax_tokens = 6\nlimit = 4\nsamples = 2\nbatch = 4\ntext = {:?}\n[output]\ndir = {:?}\n{extra}",
        model.display().to_string(),
        texts.display().to_string(),
        out.display().to_string()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    Recipe::load(&path, &[]).unwrap()
}

#[test]
fn run_on_a_fixture_recipe_end_to_end_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions { num_layers: 3, ..Default::default() });
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), &model, &out, "[direction]\nlayer = 1\n");
    let summary = run_recipe(&r, &hub(), &Silent).unwrap();
    assert_eq!(summary.ran, vec!["probe", "ablate", "eval"]);
    assert_eq!(summary.direction, "resid_pre.1");
    for file in [
        "probe/directions.safetensors",
        "probe/cosine.png",
        "probe/report.md",
        "model/model.safetensors",
        "model/README.md",
        "eval.json",
        "report.md",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let report = std::fs::read_to_string(&summary.report).unwrap();
    for section in [
        "Layer metrics",
        "Chosen direction",
        "verification",
        "Evaluation",
        "Side by side",
        "KL(before",
        "cross-entropy",
    ] {
        assert!(report.contains(section), "report lacks {section}");
    }
    assert!(std::fs::read_to_string(out.join("model/README.md")).unwrap().contains("## Evaluation"));
    // Nothing changed: nothing runs again; a changed eval setting re-runs eval only.
    assert!(run_recipe(&r, &hub(), &Silent).unwrap().ran.is_empty());
    let r2 = recipe(tmp.path(), &model, &out, "[direction]\nlayer = 1\n[ablate]\nnorm_preserve = true\n");
    assert_eq!(run_recipe(&r2, &hub(), &Silent).unwrap().ran, vec!["ablate", "eval"]);
}

/// With no fixed layer, `scalpel run` chooses the edit by search, writes the chosen trial, and
/// resumes a search that is given more trials instead of starting it again.
#[test]
fn run_searches_the_edit_by_default_and_resumes_with_more_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions { num_layers: 4, ..Default::default() });
    let out = tmp.path().join("out");
    let search =
        |trials: usize| format!("[search]\ntrials = {trials}\nstartup = 2\nlimit = 3\nmax_tokens = 3\nbatch = 4\n");
    let r = recipe(tmp.path(), &model, &out, &search(3));
    let summary = run_recipe(&r, &hub(), &Silent).unwrap();
    assert_eq!(summary.ran, vec!["probe", "search", "ablate", "eval"]);
    assert!(summary.direction.starts_with("trial."), "{}", summary.direction);
    let report = std::fs::read_to_string(&summary.report).unwrap();
    assert!(report.contains("Chosen edit") && report.contains("search/pareto.png"), "{report}");
    assert!(out.join("search/pareto.png").is_file() && out.join("search/report.md").is_file());
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/scalpel_edit.json")).unwrap()).unwrap();
    assert!(record["search_trial"]["scores"]["kl_mean"].is_number(), "the edit record keeps the trial's scores");
    assert!(record["options"]["profile"].is_object(), "and its strength profiles");
    assert!(run_recipe(&r, &hub(), &Silent).unwrap().ran.is_empty(), "nothing changed, nothing runs");
    let lines = |p: &Path| std::fs::read_to_string(p.join("search/trials.jsonl")).unwrap();
    let before = lines(&out);
    let more = recipe(tmp.path(), &model, &out, &search(5));
    assert_eq!(run_recipe(&more, &hub(), &Silent).unwrap().ran, vec!["search", "ablate", "eval"]);
    let after = lines(&out);
    let stage1 = after.lines().filter(|l| !l.starts_with("{\"stage\":2")).count();
    assert!(after.starts_with(&before) && stage1 == 5, "the search resumed:\n{before}\n---\n{after}");
}

#[test]
fn run_on_the_demo_model_when_present() {
    let Some(model) = crate::real_model::demo_model() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Recipe::load(&root.join("recipes/qwen2.5-coder-0.5b-instruct.toml"), &[]).unwrap();
    assert!(Path::new(&r.model.path).join("config.json").is_file(), "the recipe names {}", model.display());
    r.output.dir = tmp.path().join("out");
    r.prompts.limit = Some(24);
    r.search.trials = 2;
    r.search.limit = Some(6);
    r.search.max_tokens = 8;
    r.search.finalists = 1;
    r.search.final_max_tokens = 16;
    r.eval.limit = Some(8);
    r.eval.max_tokens = 16;
    r.eval.samples = 2;
    let summary = run_recipe(&r, &hub(), &Silent).unwrap();
    assert_eq!(summary.ran, vec!["probe", "search", "ablate", "eval"]);
    let report = std::fs::read_to_string(&summary.report).unwrap();
    assert!(
        report.contains("0 of ") && report.contains(" tensors outside their bound"),
        "every edited tensor verifies:\n{report}"
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.output.dir.join("eval.json")).unwrap()).unwrap();
    assert!(eval["report"]["kl"]["mean"].as_f64().unwrap() > 0.0, "the edit changes the model");
}

/// The recipe's `direction.stream` is the stream the direction comes from.
#[test]
fn the_recipe_stream_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixture(tmp.path(), "llama", "llama", &FixtureOptions { num_layers: 3, ..Default::default() });
    let out = tmp.path().join("out");
    let extra = "[direction]\nstream = \"resid_mid\"\nrule = \"max-norm\"\n[search]\nenabled = false\n";
    let r = recipe(tmp.path(), &model, &out, extra);
    let summary = run_recipe(&r, &hub(), &Silent).unwrap();
    assert!(summary.direction.starts_with("resid_mid."), "{}", summary.direction);
    let file = scalpel::directions::DirectionsFile::load(&out.join("probe/directions.safetensors")).unwrap();
    assert_eq!(file.recommended().unwrap().0, "resid_mid");
}

/// Replacing the model at the same path (a re-import) re-runs every step.
#[test]
fn a_replaced_model_is_not_reused_from_stale_stamps() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions::default());
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), &model, &out, "[direction]\nlayer = 1\n");
    assert_eq!(run_recipe(&r, &hub(), &Silent).unwrap().ran, vec!["probe", "ablate", "eval"]);
    std::fs::remove_dir_all(&model).unwrap();
    common::fixture(tmp.path(), "qwen2", "qwen2", &FixtureOptions { seed: 9, ..Default::default() });
    assert_eq!(
        run_recipe(&r, &hub(), &Silent).unwrap().ran,
        vec!["probe", "ablate", "eval"],
        "another model, same path"
    );
}
