//! Model resolution: a local folder, or a hub id found in the Hugging Face cache or downloaded.

use super::reader::{INDEX_FILE, SINGLE_FILE};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// Turn what the user typed into a model folder.
///
/// A path that exists is used as is. Otherwise `owner/name[@revision]` is looked up in the
/// Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`), and downloaded with hf-hub when not cached
/// (with progress; never when `HF_HUB_OFFLINE=1`).
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, rev.to_string()),
        None => (spec, "main".to_string()),
    };
    if id.split('/').count() != 2 || id.starts_with('.') || id.contains("..") {
        return Err(Error::Invalid(format!(
            "model `{spec}` is neither an existing folder nor a hub id of the form owner/name"
        )));
    }
    if let Some(dir) = from_cache(id, &revision) {
        tracing::info!("using cached {id} at {}", dir.display());
        return Ok(dir);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        return Err(Error::Invalid(format!("model `{id}` is not in the Hugging Face cache and HF_HUB_OFFLINE=1")));
    }
    download(id, &revision)
}

fn repo(id: &str, revision: &str) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, revision.to_string())
}

fn from_cache(id: &str, revision: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let repo = cache.repo(repo(id, revision));
    let config = repo.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    let weights_ok = if let Some(index) = repo.get(INDEX_FILE) {
        let text = std::fs::read_to_string(index).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        let files = super::reader::weight_map(&value, &dir).ok()?;
        files.values().all(|f| dir.join(f).is_file())
    } else {
        repo.get(SINGLE_FILE).is_some()
    };
    weights_ok.then_some(dir)
}

fn download(id: &str, revision: &str) -> Result<PathBuf> {
    let unreachable = |e: hf_hub::api::sync::ApiError| {
        Error::Invalid(format!(
            "could not download `{id}` from the Hugging Face Hub ({e}); pass a local folder instead"
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(unreachable)?;
    let repo = api.repo(repo(id, revision));
    let config = repo.get("config.json").map_err(unreachable)?;
    for file in SIDE_FILES.iter().skip(1) {
        // Optional files: absent ones are fine.
        let _ = repo.get(file);
    }
    match repo.get(INDEX_FILE) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json { path: index.clone(), source })?;
            let mut files: Vec<String> = super::reader::weight_map(&value, &index)?.into_values().collect();
            files.sort();
            files.dedup();
            for file in files {
                repo.get(&file).map_err(unreachable)?;
            }
        }
        Err(_) => {
            repo.get(SINGLE_FILE).map_err(unreachable)?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_paths_are_used_as_is_and_nonsense_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_model(dir.path().to_str().unwrap()).unwrap(), dir.path());
        let err = resolve_model("no/such/thing/here").unwrap_err().to_string();
        assert!(err.contains("owner/name"), "{err}");
    }

    #[test]
    fn offline_hub_ids_missing_from_the_cache_are_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        // SAFETY: test-only; this test is the only one in the crate touching these variables.
        unsafe {
            std::env::set_var("HF_HUB_CACHE", cache.path());
            std::env::set_var("HF_HUB_OFFLINE", "1");
        }
        let err = resolve_model("someone/some-model").unwrap_err().to_string();
        assert!(err.contains("someone/some-model") && err.contains("HF_HUB_OFFLINE"), "{err}");
    }
}
