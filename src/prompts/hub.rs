//! Hugging Face dataset references, `hf://owner/name[:split][#column]`, resolved to local data
//! files: from the local Hugging Face cache when present, else downloaded with hf-hub.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The prefix that marks a dataset reference.
pub const HUB_PREFIX: &str = "hf://";

/// Data file extensions scalpel reads, in order of preference.
const READABLE: &[&str] = &["jsonl", "json", "csv", "tsv", "parquet"];

/// A parsed `hf://owner/name[:split][#column]` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDatasetRef {
    /// `owner/name`.
    pub repo: String,
    /// The split (default `train`).
    pub split: String,
    /// The column to read, when given after `#`.
    pub column: Option<String>,
}

fn valid_part(part: &str) -> bool {
    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl HubDatasetRef {
    /// Parse `hf://owner/name[:split][#column]` (the `hf://` prefix is optional here).
    pub fn parse(spec: &str) -> Result<HubDatasetRef> {
        let bad = |why: &str| {
            Error::Invalid(format!("`{spec}`: {why}; expected hf://owner/name[:split][#column], e.g. hf://tatsu-lab/alpaca:train#instruction"))
        };
        let rest = spec.strip_prefix(HUB_PREFIX).unwrap_or(spec);
        let (rest, column) = match rest.split_once('#') {
            Some((r, c)) if !c.is_empty() => (r, Some(c.to_string())),
            Some(_) => return Err(bad("empty column after `#`")),
            None => (rest, None),
        };
        let (repo, split) = match rest.split_once(':') {
            Some((r, s)) if valid_part(s) => (r, s.to_string()),
            Some(_) => return Err(bad("the split after `:` must be a plain name")),
            None => (rest, "train".to_string()),
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid_part(owner) && valid_part(name) => {}
            _ => return Err(bad("the dataset must be named owner/name")),
        }
        Ok(HubDatasetRef { repo: repo.to_string(), split, column })
    }

    /// A short display name: `owner/name:split`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.repo, self.split)
    }

    /// The local data files of this split: from the Hugging Face cache (`HF_HOME`) when it holds
    /// them, else downloaded (`HF_ENDPOINT` is honoured). Offline without a cached copy, the
    /// error says so and suggests a local file.
    pub fn resolve(&self) -> Result<Vec<PathBuf>> {
        let cache = hf_hub::Cache::from_env();
        let endpoint = std::env::var("HF_ENDPOINT").ok();
        self.resolve_with(cache.path(), endpoint.as_deref())
    }

    /// [`HubDatasetRef::resolve`] with an explicit cache folder (the `hub` folder that holds
    /// `datasets--owner--name`) and hub endpoint (None: huggingface.co).
    pub fn resolve_with(&self, cache_dir: &Path, endpoint: Option<&str>) -> Result<Vec<PathBuf>> {
        if let Some(files) = self.cached_files(cache_dir) {
            return Ok(files);
        }
        let err = |why: String| Error::Invalid(format!("hf://{}: {why}", self.name()));
        let mut builder =
            hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir.to_path_buf())).with_progress(false);
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint.to_string());
        }
        let api = builder.build().map_err(|e| err(e.to_string()))?;
        let repo = api.repo(hf_hub::Repo::new(self.repo.clone(), hf_hub::RepoType::Dataset));
        let info = repo.info().map_err(|e| {
            err(format!(
                "cannot reach the Hugging Face Hub ({e}) and {} holds no cached copy; \
                 download the data file elsewhere and pass its local path (.txt, .jsonl, .json or .csv)",
                cache_dir.display()
            ))
        })?;
        let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let chosen = self.pick_files(&names)?;
        chosen.iter().map(|f| repo.get(f).map_err(|e| err(format!("downloading {f}: {e}")))).collect()
    }

    /// Files of this split in the local cache's snapshot of `main`, if any.
    fn cached_files(&self, cache_dir: &Path) -> Option<Vec<PathBuf>> {
        let repo_dir = cache_dir.join(format!("datasets--{}", self.repo.replace('/', "--")));
        let commit = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok()?;
        let snapshot = repo_dir.join("snapshots").join(commit.trim());
        let mut names = Vec::new();
        list_files(&snapshot, &snapshot, &mut names);
        let chosen = self.pick_files(&names).ok()?;
        Some(chosen.iter().map(|f| snapshot.join(f)).collect())
    }

    /// Choose the data files of this split among a repository's file names: readable files whose
    /// path mentions the split (a folder named after it, or a file name that is the split or
    /// starts/ends with it, e.g. `data/train-00000-of-00001.jsonl`, `test.csv`). With the
    /// default split `train` and a single readable file, that file. Shards of the split are all
    /// returned, sorted; one format only (jsonl before json before csv before tsv before parquet).
    pub fn pick_files(&self, names: &[String]) -> Result<Vec<String>> {
        let extension = |f: &str| f.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        let in_split = |f: &str| {
            let mut parts: Vec<&str> = f.split('/').collect();
            let file = parts.pop().unwrap_or("");
            let stem = file.split('.').next().unwrap_or("");
            let split = self.split.as_str();
            parts.contains(&split)
                || stem == split
                || [format!("{split}-"), format!("{split}_")].iter().any(|p| stem.starts_with(p.as_str()))
                || [format!("-{split}"), format!("_{split}")].iter().any(|p| stem.ends_with(p.as_str()))
        };
        let readable: Vec<&String> = names.iter().filter(|f| READABLE.contains(&extension(f).as_str())).collect();
        for ext in READABLE {
            let mut matching: Vec<String> =
                readable.iter().filter(|f| extension(f) == *ext && in_split(f)).map(|f| f.to_string()).collect();
            if !matching.is_empty() {
                matching.sort();
                return Ok(matching);
            }
        }
        if self.split == "train" && readable.len() == 1 {
            return Ok(vec![readable[0].clone()]);
        }
        Err(Error::Invalid(format!(
            "hf://{}: no .jsonl, .json, .csv, .tsv or .parquet file for split `{}`",
            self.name(),
            self.split
        )))
    }
}

/// Every file under `dir`, as `/`-separated paths relative to `root`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            list_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
}
