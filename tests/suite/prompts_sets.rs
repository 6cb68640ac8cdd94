//! Prompt sets: file formats, field selection, errors, splits, hashes, hub references and the
//! shipped default sets.

use scalpel::prompts::{load_prompt_set, HubDatasetRef, PromptSet};
use std::collections::HashSet;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn load(spec: &str, field: Option<&str>) -> Vec<String> {
    load_prompt_set(spec, field).unwrap().prompts
}

#[test]
fn text_files_skip_blank_lines_and_trailing_whitespace() {
    let d = tempfile::tempdir().unwrap();
    let spec = write(d.path(), "mine.txt", "\u{feff}one\r\n\n   \ttwo words \t\n\nthree\n");
    let set = load_prompt_set(&spec, None).unwrap();
    assert_eq!(set.prompts, ["one", "two words", "three"]);
    assert_eq!(set.name, "mine");
    assert_eq!(set.source, spec);
    assert_eq!(set.len(), 3);
}

#[test]
fn jsonl_reads_strings_and_objects_with_default_or_chosen_field() {
    let d = tempfile::tempdir().unwrap();
    let spec = write(
        d.path(),
        "a.jsonl",
        "{\"goal\": \"g1\", \"target\": \"t1\"}\n\n{\"goal\": \"g2\", \"target\": \"t2\"}\n\"plain\"\n",
    );
    assert_eq!(load(&spec, None), ["g1", "g2", "plain"]);
    assert_eq!(load(&spec, Some("target")), ["t1", "t2", "plain"]);
    // The default order: "prompt" before "instruction" before "text".
    let spec = write(d.path(), "b.jsonl", "{\"text\": \"T\", \"instruction\": \"I\", \"prompt\": \"P\"}\n");
    assert_eq!(load(&spec, None), ["P"]);
    let spec = write(d.path(), "c.jsonl", "{\"text\": \"T\", \"instruction\": \"I\"}\n");
    assert_eq!(load(&spec, None), ["I"]);
    // A single unknown field is used as is.
    let spec = write(d.path(), "d.jsonl", "{\"behaviour\": \"B\"}\n");
    assert_eq!(load(&spec, None), ["B"]);
}

#[test]
fn json_arrays_of_strings_or_objects() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(load(&write(d.path(), "a.json", r#"["x", {"prompt": "y"}, "  "]"#), None), ["x", "y"]);
    let objects =
        write(d.path(), "b.json", r#"[{"question": "q1", "query": "r1"}, {"question": "q2", "query": "r2"}]"#);
    assert_eq!(load(&objects, None), ["q1", "q2"]);
    assert_eq!(load(&objects, Some("query")), ["r1", "r2"]);
}

#[test]
fn csv_and_tsv_pick_the_column() {
    let d = tempfile::tempdir().unwrap();
    let csv = write(d.path(), "a.csv", "id,goal,target\n1,hello,z1\n2,\"a, b\",z2\n");
    assert_eq!(load(&csv, None), ["hello", "a, b"]);
    assert_eq!(load(&csv, Some("target")), ["z1", "z2"]);
    let single = write(d.path(), "s.csv", "behaviour\nfirst\nsecond\n");
    assert_eq!(load(&single, None), ["first", "second"]);
    let tsv = write(d.path(), "t.tsv", "n\tinstruction\n1\tdo this, then that\n");
    assert_eq!(load(&tsv, None), ["do this, then that"]);
}

fn error(spec: &str, field: Option<&str>) -> String {
    load_prompt_set(spec, field).unwrap_err().to_string()
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path();
    for (name, text, field, expect) in [
        ("empty.txt", "\n \n\t\n", None, "empty set"),
        ("empty.jsonl", "", None, "empty set"),
        ("empty.json", "[]", None, "empty set"),
        ("header_only.csv", "prompt\n", None, "empty set"),
        ("nofield.jsonl", "{\"foo\": \"a\", \"bar\": \"b\"}\n", None, "--field"),
        ("nofield.jsonl", "{\"prompt\": \"a\"}\n", Some("goal"), "no field `goal`"),
        ("badline.jsonl", "{\"prompt\": \"a\"}\n{nope\n", None, "line 2: invalid JSON"),
        ("bad.json", "[\"a\",", None, "invalid JSON"),
        ("object.json", "{\"prompt\": \"a\"}", None, "expected a JSON array"),
        ("number.json", "[{\"prompt\": 3}]", None, "entry 0: field `prompt` is not a string"),
        ("nested.json", "[[\"a\"]]", None, "expected a string or an object"),
        ("nocol.csv", "a,b\n1,2\n", None, "--field"),
        ("nocol.csv", "a,b\n1,2\n", Some("prompt"), "no field `prompt`"),
        ("ragged.csv", "prompt,b\n1,2\n3\n", None, "ragged.csv"),
        ("data.parquet", "PAR1", None, "not a readable parquet file"),
    ] {
        let err = error(&write(t, name, text), field);
        assert!(err.contains(name) && err.contains(expect), "{name}: {err}");
    }
    let missing = t.join("missing.txt");
    let err = error(&missing.to_string_lossy(), None);
    assert!(err.contains("missing.txt"), "{err}");
    let err = error(&t.to_string_lossy(), None);
    assert!(err.contains("folder"), "{err}");
    std::fs::write(t.join("latin1.txt"), [0x66u8, 0xe9, 0x0a]).unwrap();
    let err = error(&t.join("latin1.txt").to_string_lossy(), None);
    assert!(err.contains("latin1.txt"), "{err}");
}

fn numbered(n: usize) -> PromptSet {
    PromptSet::from_prompts("numbers", (0..n).map(|i| format!("p{i}")).collect())
}

#[test]
fn splits_are_deterministic_disjoint_and_complete() {
    let set = numbered(50);
    let (train, test) = set.split(0.2, 7);
    assert_eq!((train.len(), test.len()), (40, 10));
    let (train2, test2) = set.split(0.2, 7);
    assert_eq!((&train.prompts, &test.prompts), (&train2.prompts, &test2.prompts));
    let train_set: HashSet<&String> = train.prompts.iter().collect();
    assert!(test.prompts.iter().all(|p| !train_set.contains(p)));
    let mut union: Vec<String> = [train.prompts.clone(), test.prompts.clone()].concat();
    union.sort();
    let mut original = set.prompts.clone();
    original.sort();
    assert_eq!(union, original);
    assert_ne!(set.split(0.2, 8).1.prompts, test.prompts, "another seed, another split");
    assert_eq!((train.name.as_str(), test.name.as_str()), ("numbers:train", "numbers:test"));
    assert_eq!(set.split(0.0, 1).1.len(), 0);
    assert_eq!(set.split(1.0, 1).0.len(), 0);
    assert_eq!(set.split(0.333, 1).1.len(), 17);
}

#[test]
fn limit_shuffle_dedup_and_hash() {
    let set = numbered(20);
    assert_eq!(set.clone().limit(5).prompts, &set.prompts[..5]);
    assert_eq!(set.clone().limit(100).len(), 20);
    let a = set.clone().shuffled(3);
    assert_eq!(a, set.clone().shuffled(3));
    assert_ne!(a.prompts, set.prompts);
    let mut sorted = a.prompts.clone();
    sorted.sort();
    let mut original = set.prompts.clone();
    original.sort();
    assert_eq!(sorted, original);
    assert_eq!(set.clone().shuffled_limited(Some(3), Some(4)).prompts, &a.prompts[..4]);
    let dup = PromptSet::from_prompts("d", vec!["x".into(), "y".into(), "x".into()]).dedup();
    assert_eq!(dup.prompts, ["x", "y"]);
    // The hash follows content and order, and is stable.
    assert_eq!(set.hash(), numbered(20).hash());
    assert_eq!(set.hash().len(), 64);
    assert_ne!(set.hash(), a.hash());
    let joined = PromptSet::from_prompts("j", vec!["ab".into()]);
    let separate = PromptSet::from_prompts("j", vec!["a".into(), "b".into()]);
    assert_ne!(joined.hash(), separate.hash());
    assert_eq!(set.short_hash(), set.hash()[..16]);
}

#[test]
fn hub_references_parse() {
    let r = HubDatasetRef::parse("hf://tatsu-lab/alpaca").unwrap();
    assert_eq!((r.repo.as_str(), r.split.as_str(), r.column.as_deref()), ("tatsu-lab/alpaca", "train", None));
    let r = HubDatasetRef::parse("hf://walledai/AdvBench:test#prompt").unwrap();
    assert_eq!((r.repo.as_str(), r.split.as_str(), r.column.as_deref()), ("walledai/AdvBench", "test", Some("prompt")));
    let r = HubDatasetRef::parse("hf://o/n#text").unwrap();
    assert_eq!((r.split.as_str(), r.column.as_deref()), ("train", Some("text")));
    assert_eq!(r.name(), "o/n:train");
    for bad in ["hf://alpaca", "hf:///x", "hf://a/b/c", "hf://a/b:", "hf://a/b#", "hf://a b/c", "hf://a/b:tr/ain"] {
        let err = HubDatasetRef::parse(bad).unwrap_err().to_string();
        assert!(err.contains(bad) && err.contains("owner/name"), "{err}");
    }
}

#[test]
fn hub_split_files_are_chosen_by_name() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pick = |spec: &str, files: &[&str]| HubDatasetRef::parse(spec).unwrap().pick_files(&names(files));
    let files = ["README.md", "data/test-00000.jsonl", "data/train-00001.jsonl", "data/train-00000.jsonl", "train.csv"];
    assert_eq!(pick("hf://o/n", &files).unwrap(), ["data/train-00000.jsonl", "data/train-00001.jsonl"]);
    assert_eq!(pick("hf://o/n:test", &files).unwrap(), ["data/test-00000.jsonl"]);
    assert_eq!(pick("hf://o/n:test", &["harmful_test.csv", "harmful_train.csv"]).unwrap(), ["harmful_test.csv"]);
    assert_eq!(pick("hf://o/n", &["behaviors.csv", "README.md"]).unwrap(), ["behaviors.csv"]);
    // "latest" must not pass for the split "test".
    assert!(pick("hf://o/n:test", &["latest.jsonl", "other.jsonl"]).is_err());
    // Parquet (how `push_to_hub` stores datasets), after the text formats.
    let parquet = ["data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"];
    assert_eq!(pick("hf://o/n", &parquet).unwrap(), ["data/train-00000-of-00001.parquet"]);
    assert_eq!(pick("hf://o/n", &["train.parquet", "train.jsonl"]).unwrap(), ["train.jsonl"]);
    let err = pick("hf://o/n:validation", &parquet).unwrap_err().to_string();
    assert!(err.contains("validation") && err.contains("o/n"), "{err}");
}

#[test]
fn hub_references_resolve_from_the_cache_offline_and_fail_clearly_without_it() {
    let cache = tempfile::tempdir().unwrap();
    let reference = HubDatasetRef::parse("hf://someone/prompts:test#goal").unwrap();
    // No cached copy, and an endpoint that refuses connections: a clear error.
    let err = reference.resolve_with(cache.path(), Some("http://127.0.0.1:9")).unwrap_err().to_string();
    assert!(err.contains("someone/prompts") && err.contains("local path"), "{err}");
    // A cache laid out like hf-hub's: refs/main names the snapshot.
    let repo = cache.path().join("datasets--someone--prompts");
    let snapshot = repo.join("snapshots").join("abc123");
    std::fs::create_dir_all(snapshot.join("data")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
    std::fs::write(snapshot.join("data").join("test.jsonl"), "{\"goal\": \"g\", \"prompt\": \"p\"}\n").unwrap();
    std::fs::write(snapshot.join("data").join("train.jsonl"), "{\"goal\": \"x\"}\n").unwrap();
    let files = reference.resolve_with(cache.path(), Some("http://127.0.0.1:9")).unwrap();
    assert_eq!(files, [snapshot.join("data").join("test.jsonl")]);
}

#[test]
fn shipped_default_sets_are_large_distinct_and_held_out() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/prompts");
    let mut all_sets: Vec<HashSet<String>> = Vec::new();
    for set in ["harmful", "harmless"] {
        let load =
            |split: &str| load_prompt_set(&dir.join(format!("{set}_{split}.txt")).to_string_lossy(), None).unwrap();
        let (train, val, test) = (load("train"), load("val"), load("test"));
        let total = train.len() + val.len() + test.len();
        assert!(total >= 200, "{set}: {total} prompts");
        assert!(train.len() >= 128, "{set}: {} training prompts", train.len());
        // Held-out splits of at least 40 each (search validates on one, eval tests on the other).
        assert!(val.len() >= 40 && test.len() >= 40, "{set}: {} validation, {} test", val.len(), test.len());
        let splits = [&train.prompts, &val.prompts, &test.prompts];
        let unique: HashSet<String> = splits.iter().flat_map(|s| s.iter()).cloned().collect();
        assert_eq!(unique.len(), total, "{set}: duplicates (within or across the splits)");
        // Case- and punctuation-insensitive duplicates too.
        let norm: HashSet<String> =
            unique.iter().map(|p| p.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect()).collect();
        assert_eq!(norm.len(), total, "{set}: near-duplicates");
        // The compiled-in copies are the files.
        for (split, prompts) in ["train", "val", "test"].iter().zip(splits) {
            let builtin = load_prompt_set(&format!("builtin:{set}_{split}"), None).unwrap();
            assert_eq!(&builtin.prompts, prompts, "builtin:{set}_{split}");
        }
        all_sets.push(unique);
    }
    assert!(all_sets[0].is_disjoint(&all_sets[1]), "a prompt is both harmful and harmless");
}
