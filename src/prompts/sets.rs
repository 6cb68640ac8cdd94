//! Prompt sets from files (.txt, .jsonl, .json, .csv) or hub datasets, with limits, seeded
//! shuffles, train/test splits and a hash for provenance.

use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Fields tried, in order, when none is given.
pub const DEFAULT_FIELDS: &[&str] = &["prompt", "instruction", "goal", "text", "question", "query", "request"];

/// A loaded prompt set.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    /// Where it came from.
    pub source: String,
    /// The prompts.
    pub prompts: Vec<String>,
}

impl PromptSet {
    /// Load `spec`: a file path, `builtin:NAME` (the project's sets), or
    /// `hf://owner/name[:split][#column]`. `field` picks the JSON
    /// field or CSV column (default: the first of [`DEFAULT_FIELDS`] present).
    pub fn load(spec: &str, field: Option<&str>) -> Result<PromptSet> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            let text = super::builtin::builtin(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown built-in prompt set `{name}` (harmful_train, harmful_test, harmless_train, harmless_test)"
                ))
            })?;
            return Ok(PromptSet {
                source: spec.to_string(),
                prompts: clean(text.lines().map(String::from).collect()),
            });
        }
        let path = match spec.strip_prefix("hf://") {
            Some(rest) => hub_file(rest)?,
            None => PathBuf::from(spec),
        };
        let field = field.or_else(|| spec.rsplit_once('#').map(|(_, c)| c).filter(|_| spec.starts_with("hf://")));
        let prompts = load_file(&path, field)?;
        if prompts.is_empty() {
            return Err(Error::Invalid(format!("{}: no prompts found (empty set)", path.display())));
        }
        Ok(PromptSet { source: spec.to_string(), prompts })
    }

    /// Shuffle with `seed` (when given) and keep at most `limit`.
    pub fn shuffled_limited(mut self, seed: Option<u64>, limit: Option<usize>) -> PromptSet {
        if let Some(seed) = seed {
            self.prompts.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        if let Some(limit) = limit {
            self.prompts.truncate(limit);
        }
        self
    }

    /// Deterministic train/test split: a seeded shuffle, then the last `test_fraction` is test.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (PromptSet, PromptSet) {
        let mut prompts = self.prompts.clone();
        prompts.shuffle(&mut StdRng::seed_from_u64(seed));
        let test = ((prompts.len() as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
        let held_out = prompts.split_off(prompts.len() - test);
        (
            PromptSet { source: format!("{} (train)", self.source), prompts },
            PromptSet { source: format!("{} (test)", self.source), prompts: held_out },
        )
    }

    /// SHA-256 of the prompts (newline-joined), hex, first 16 characters.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.prompts {
            h.update(p.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

fn pick_field<'a>(keys: &[&'a str], field: Option<&'a str>, path: &Path) -> Result<&'a str> {
    if let Some(f) = field {
        return if keys.contains(&f) {
            Ok(f)
        } else {
            Err(Error::Invalid(format!("{}: no field `{f}` (fields: {})", path.display(), keys.join(", "))))
        };
    }
    DEFAULT_FIELDS.iter().find(|f| keys.contains(f)).copied().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: none of the usual fields ({}) is present; choose one with --field (fields: {})",
            path.display(),
            DEFAULT_FIELDS.join(", "),
            keys.join(", ")
        ))
    })
}

fn from_json_value(value: &serde_json::Value, field: Option<&str>, path: &Path) -> Result<Option<String>> {
    match value {
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            let key = pick_field(&keys, field, path)?;
            Ok(o.get(key).and_then(|v| v.as_str()).map(String::from))
        }
        _ => Err(Error::Invalid(format!("{}: entries must be strings or objects", path.display()))),
    }
}

fn clean(prompts: Vec<String>) -> Vec<String> {
    prompts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn load_file(path: &Path, field: Option<&str>) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "parquet" {
        return Err(Error::Invalid(format!(
            "{}: parquet is not read directly; convert it to .jsonl or .csv (e.g. pandas.read_parquet(f).to_json(out, orient='records', lines=True))",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let prompts = match ext.as_str() {
        "jsonl" => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| Error::Invalid(format!("{}:{}: invalid JSON: {e}", path.display(), i + 1)))?;
                out.extend(from_json_value(&value, field, path)?);
            }
            out
        }
        "json" => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
            let items = value
                .as_array()
                .ok_or_else(|| Error::Invalid(format!("{}: expected a JSON array of prompts", path.display())))?;
            let mut out = Vec::new();
            for item in items {
                out.extend(from_json_value(item, field, path)?);
            }
            out
        }
        "csv" => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader.headers().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?.clone();
            let keys: Vec<&str> = headers.iter().collect();
            let column = pick_field(&keys, field, path)?;
            let index = keys.iter().position(|k| *k == column).expect("picked from the headers");
            let mut out = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
                out.extend(record.get(index).map(String::from));
            }
            out
        }
        _ => text.lines().map(String::from).collect(),
    };
    Ok(clean(prompts))
}

/// Resolve `owner/name[:split][#column]` to a downloaded data file of the dataset.
fn hub_file(spec: &str) -> Result<PathBuf> {
    let spec = spec.split('#').next().unwrap_or(spec);
    let (id, split) = spec.split_once(':').unwrap_or((spec, "train"));
    let err = |e: String| Error::Invalid(format!("hf://{spec}: {e}"));
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(|e| err(e.to_string()))?;
    let repo = api.repo(hf_hub::Repo::new(id.to_string(), hf_hub::RepoType::Dataset));
    let info = repo.info().map_err(|e| err(format!("cannot reach the Hugging Face Hub ({e}); use a local file")))?;
    let file = info
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .filter(|f| [".jsonl", ".json", ".csv"].iter().any(|e| f.ends_with(e)) && f.contains(split))
        .min()
        .ok_or_else(|| err(format!("no .jsonl/.json/.csv file for split `{split}`")))?;
    repo.get(&file).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn every_format_loads_with_field_selection() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        assert_eq!(PromptSet::load(&write(t, "a.txt", "one\n\n two \n"), None).unwrap().prompts, ["one", "two"]);
        assert_eq!(
            PromptSet::load(&write(t, "a.jsonl", "{\"goal\": \"g1\"}\n{\"goal\": \"g2\"}\n"), None).unwrap().prompts,
            ["g1", "g2"]
        );
        assert_eq!(
            PromptSet::load(&write(t, "a.json", "[\"x\", {\"prompt\": \"y\"}]"), None).unwrap().prompts,
            ["x", "y"]
        );
        let csv = write(t, "a.csv", "id,text,other\n1,hello,z\n2,\"a, b\",z\n");
        assert_eq!(PromptSet::load(&csv, None).unwrap().prompts, ["hello", "a, b"]);
        assert_eq!(PromptSet::load(&csv, Some("other")).unwrap().prompts, ["z", "z"]);
    }

    #[test]
    fn errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        for (name, text, expect) in [
            ("e.txt", "\n \n", "empty"),
            ("m.jsonl", "{\"foo\": 1}\n", "--field"),
            ("b.jsonl", "{nope\n", "b.jsonl:1"),
            ("p.parquet", "", "convert"),
        ] {
            let err = PromptSet::load(&write(t, name, text), None).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(expect), "{err}");
        }
        assert!(PromptSet::load(&t.join("missing.txt").to_string_lossy(), None).is_err());
    }

    #[test]
    fn splits_are_deterministic_and_disjoint() {
        let set = PromptSet { source: "s".into(), prompts: (0..50).map(|i| format!("p{i}")).collect() };
        let (a, b) = set.split(0.2, 7);
        let (a2, b2) = set.split(0.2, 7);
        assert_eq!((a.prompts.len(), b.prompts.len()), (40, 10));
        assert_eq!((&a.prompts, &b.prompts), (&a2.prompts, &b2.prompts));
        assert!(a.prompts.iter().all(|p| !b.prompts.contains(p)));
        assert_ne!(set.split(0.2, 8).1.prompts, b.prompts);
        assert_eq!(set.clone().shuffled_limited(Some(1), Some(5)).prompts.len(), 5);
        assert_ne!(set.hash(), a.hash());
    }
}

#[cfg(test)]
mod shipped {
    use super::PromptSet;
    use std::path::Path;

    #[test]
    fn default_sets_are_large_distinct_and_held_out() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/prompts");
        for set in ["harmful", "harmless"] {
            let load =
                |split: &str| PromptSet::load(&dir.join(format!("{set}_{split}.txt")).to_string_lossy(), None).unwrap();
            let (train, test) = (load("train"), load("test"));
            assert!(train.prompts.len() + test.prompts.len() >= 128, "{set}");
            assert!(test.prompts.len() >= 16, "{set}: held-out split");
            let mut all = [train.prompts.clone(), test.prompts.clone()].concat();
            let n = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), n, "{set}: duplicates");
            assert!(test.prompts.iter().all(|p| !train.prompts.contains(p)), "{set}: train/test overlap");
        }
    }
}
