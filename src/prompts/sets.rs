//! Prompt sets from files (.txt, .jsonl, .json, .csv, .tsv) or hub datasets, with limits, seeded
//! shuffles, train/test splits and a hash for provenance.

use super::hub::{HubDatasetRef, HUB_PREFIX};
use crate::{Error, Result};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Fields (JSON) or columns (CSV) tried, in order, when none is given.
pub const DEFAULT_FIELDS: &[&str] = &["prompt", "instruction", "goal", "text", "question", "query", "request"];

/// A loaded prompt set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSet {
    /// A short name (the file stem, or `owner/name:split`).
    pub name: String,
    /// Where it came from (the path or `hf://` reference as given).
    pub source: String,
    /// How the prompts were derived from the source, in order (`train split, seed 7`, `the 76
    /// of 128 the model refuses`); empty when they are the source's prompts.
    pub derivation: Vec<String>,
    /// The prompts, trimmed, none empty.
    pub prompts: Vec<String>,
}

/// Load a prompt set; see [`PromptSet::load`].
pub fn load_prompt_set(spec: &str, field: Option<&str>) -> Result<PromptSet> {
    PromptSet::load(spec, field)
}

impl PromptSet {
    /// The source with its derivation, for people: `/a/b/harmful.txt (train split, seed 7; the
    /// 76 of 128 the model refuses)`.
    pub fn described(&self) -> String {
        Self::with_derivation(&self.source, &self.derivation)
    }

    /// [`PromptSet::described`] with a local path cut to its file name: what files record, so
    /// that no local path leaves the machine in them; the prompts' hash identifies the content.
    pub fn recorded_source(&self) -> String {
        let local = !self.source.contains("://") && (self.source.contains('/') || self.source.contains('\\'));
        let name = match std::path::Path::new(&self.source).file_name() {
            Some(name) if local => name.to_string_lossy().into_owned(),
            _ => self.source.clone(),
        };
        Self::with_derivation(&name, &self.derivation)
    }

    fn with_derivation(source: &str, derivation: &[String]) -> String {
        if derivation.is_empty() {
            source.to_string()
        } else {
            format!("{source} ({})", derivation.join("; "))
        }
    }

    /// The same set narrowed to `prompts`, derived from it as `step` says.
    pub fn derived(&self, step: String, prompts: Vec<String>) -> PromptSet {
        let mut derivation = self.derivation.clone();
        derivation.push(step);
        PromptSet { name: self.name.clone(), source: self.source.clone(), derivation, prompts }
    }

    /// A set from prompts already in memory.
    pub fn from_prompts(name: &str, prompts: Vec<String>) -> PromptSet {
        PromptSet { name: name.to_string(), source: name.to_string(), derivation: Vec::new(), prompts }
    }

    /// Load `spec`: a file path, `builtin:NAME` (the project's own sets, compiled in), or
    /// `hf://owner/name[:split][#column]`.
    ///
    /// - `.txt` (and any other extension): one prompt per line; blank lines are skipped and
    ///   surrounding whitespace trimmed.
    /// - `.jsonl`: one JSON value per line; `.json`: an array. Values are strings, or objects
    ///   whose `field` is read.
    /// - `.csv` / `.tsv`: a header row; the column `field` is read.
    /// - `.parquet`: the string column `field` (snappy, gzip, lz4 or uncompressed pages).
    ///
    /// `field` defaults to the `#column` of a hub reference, else the first of
    /// [`DEFAULT_FIELDS`] present, else the only field/column when there is exactly one.
    /// An empty set is an error naming the file.
    pub fn load(spec: &str, field: Option<&str>) -> Result<PromptSet> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            let text = super::builtin::builtin(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown built-in prompt set `{name}` (harmful_train, harmful_test, harmless_train, harmless_test)"
                ))
            })?;
            let prompts = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            return Ok(PromptSet { name: name.to_string(), source: spec.to_string(), derivation: Vec::new(), prompts });
        }
        if spec.starts_with(HUB_PREFIX) {
            let reference = HubDatasetRef::parse(spec)?;
            let field = field.or(reference.column.as_deref());
            let mut prompts = Vec::new();
            for file in reference.resolve()? {
                prompts.extend(load_file(&file, field)?);
            }
            if prompts.is_empty() {
                return Err(Error::Invalid(format!("{spec}: no prompts found (empty set)")));
            }
            return Ok(PromptSet { name: reference.name(), source: spec.to_string(), derivation: Vec::new(), prompts });
        }
        let path = Path::new(spec);
        let prompts = load_file(path, field)?;
        if prompts.is_empty() {
            return Err(Error::Invalid(format!("{}: no prompts found (empty set)", path.display())));
        }
        let name = path.file_stem().map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned());
        Ok(PromptSet { name, source: spec.to_string(), derivation: Vec::new(), prompts })
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the set has no prompts.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Keep the first `n` prompts (all when there are fewer).
    pub fn limit(mut self, n: usize) -> PromptSet {
        self.prompts.truncate(n);
        self
    }

    /// Shuffle the prompts with a seeded generator (the same seed gives the same order).
    pub fn shuffled(mut self, seed: u64) -> PromptSet {
        self.prompts.shuffle(&mut StdRng::seed_from_u64(seed));
        self
    }

    /// Shuffle with `seed` (when given), then keep at most `limit`.
    pub fn shuffled_limited(self, seed: Option<u64>, limit: Option<usize>) -> PromptSet {
        let set = match seed {
            Some(seed) => self.shuffled(seed),
            None => self,
        };
        match limit {
            Some(n) => set.limit(n),
            None => set,
        }
    }

    /// Drop repeated prompts, keeping the first occurrence of each.
    pub fn dedup(mut self) -> PromptSet {
        let mut seen = std::collections::HashSet::new();
        self.prompts.retain(|p| seen.insert(p.clone()));
        self
    }

    /// Deterministic train/test split: a seeded shuffle, then the last
    /// `round(len × test_fraction)` prompts (fraction clamped to [0, 1]) are the test part.
    /// The parts are disjoint and together hold every prompt once; named `<name>:train` and
    /// `<name>:test`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (PromptSet, PromptSet) {
        let mut prompts = self.prompts.clone();
        prompts.shuffle(&mut StdRng::seed_from_u64(seed));
        let fraction = if test_fraction.is_nan() { 0.0 } else { test_fraction.clamp(0.0, 1.0) };
        let test = ((prompts.len() as f64) * fraction).round() as usize;
        let held_out = prompts.split_off(prompts.len() - test.min(prompts.len()));
        let part = |suffix: &str, prompts: Vec<String>| PromptSet {
            name: format!("{}:{suffix}", self.name),
            ..self.derived(format!("{suffix} split, seed {seed}"), prompts)
        };
        (part("train", prompts), part("test", held_out))
    }

    /// SHA-256 (hex) of the prompts in order, each hashed as its byte length (u64, little endian)
    /// followed by its UTF-8 bytes, so that no two different lists share a hash input.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.prompts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 16 hex characters of [`PromptSet::hash`], for display.
    pub fn short_hash(&self) -> String {
        self.hash()[..16].to_string()
    }
}

/// The field to read among `keys`: the requested one, else a default, else the only one.
pub(crate) fn pick_field<'a>(keys: &[&'a str], field: Option<&'a str>, path: &Path, what: &str) -> Result<&'a str> {
    if let Some(f) = field {
        return if keys.contains(&f) {
            Ok(f)
        } else {
            Err(Error::Invalid(format!("{}: {what}: no field `{f}` (fields: {})", path.display(), keys.join(", "))))
        };
    }
    if let Some(f) = DEFAULT_FIELDS.iter().find(|f| keys.contains(f)) {
        return Ok(f);
    }
    if let [only] = keys {
        return Ok(only);
    }
    Err(Error::Invalid(format!(
        "{}: {what}: none of the usual fields ({}) is present; choose one with --field (fields: {})",
        path.display(),
        DEFAULT_FIELDS.join(", "),
        keys.join(", ")
    )))
}

/// The prompt of one JSON record (`what` says where it is, for errors).
fn from_json_value(value: &Value, field: Option<&str>, path: &Path, what: &str) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            let key = pick_field(&keys, field, path, what)?;
            match o.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(Error::Invalid(format!("{}: {what}: field `{key}` is not a string", path.display()))),
            }
        }
        _ => Err(Error::Invalid(format!("{}: {what}: expected a string or an object", path.display()))),
    }
}

fn clean(prompts: Vec<String>) -> Vec<String> {
    prompts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn load_delimited(text: &str, delimiter: u8, field: Option<&str>, path: &Path) -> Result<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?.clone();
    let keys: Vec<&str> = headers.iter().collect();
    let column = pick_field(&keys, field, path, "header")?;
    let index = keys.iter().position(|k| *k == column).unwrap_or(0);
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        out.extend(record.get(index).map(String::from));
    }
    Ok(out)
}

/// The prompts of one local file (not yet checked for emptiness).
pub(crate) fn load_file(path: &Path, field: Option<&str>) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if path.is_dir() {
        return Err(Error::Invalid(format!("{}: is a folder, not a prompt file", path.display())));
    }
    if ext == "parquet" {
        return Ok(clean(super::parquet::load_parquet(path, field)?));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let prompts = match ext.as_str() {
        "jsonl" => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let what = format!("line {}", i + 1);
                let value: Value = serde_json::from_str(line)
                    .map_err(|e| Error::Invalid(format!("{}: {what}: invalid JSON: {e}", path.display())))?;
                out.push(from_json_value(&value, field, path, &what)?);
            }
            out
        }
        "json" => {
            let value: Value =
                serde_json::from_str(text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
            let items = value.as_array().ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: expected a JSON array of prompts (strings or objects); for one object per line use .jsonl",
                    path.display()
                ))
            })?;
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                out.push(from_json_value(item, field, path, &format!("entry {i}"))?);
            }
            out
        }
        "csv" => load_delimited(text, b',', field, path)?,
        "tsv" => load_delimited(text, b'\t', field, path)?,
        _ => text.lines().map(String::from).collect(),
    };
    Ok(clean(prompts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_sources_keep_file_names_not_local_paths() {
        let set = |source: &str| PromptSet::from_prompts("h", vec!["p".into()]).with_source(source);
        let derived = set("/home/me/work (old)/harmful_train.txt")
            .derived("train split, seed 7".into(), vec!["p".into()])
            .derived("the 1 of 1 the model refuses".into(), vec!["p".into()]);
        assert_eq!(derived.recorded_source(), "harmful_train.txt (train split, seed 7; the 1 of 1 the model refuses)");
        assert_eq!(
            derived.described(),
            "/home/me/work (old)/harmful_train.txt (train split, seed 7; the 1 of 1 the model refuses)"
        );
        assert_eq!(set("prompts/harmless.txt").recorded_source(), "harmless.txt");
        assert_eq!(set("builtin:harmful").recorded_source(), "builtin:harmful");
        assert_eq!(set("hf://owner/name:train").recorded_source(), "hf://owner/name:train");
    }

    impl PromptSet {
        fn with_source(mut self, source: &str) -> PromptSet {
            self.source = source.into();
            self
        }
    }
}
