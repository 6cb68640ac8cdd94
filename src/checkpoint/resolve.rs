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

/// Where hub models are cached and whether they may be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hub {
    /// The Hugging Face cache folder (`…/hub`).
    pub cache: PathBuf,
    /// Never download (only what the cache holds is found).
    pub offline: bool,
}

impl Hub {
    /// The settings the Hugging Face tools read from the environment: the cache `HF_HUB_CACHE`,
    /// else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; offline when `HF_HUB_OFFLINE=1`.
    /// Read by the command line, once.
    pub fn from_env() -> Hub {
        Hub {
            cache: std::env::var_os("HF_HUB_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_hub::Cache::from_env().path().clone()),
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1"),
        }
    }
}

/// Turn what the user typed into a model folder.
///
/// A path that exists is used as is. Otherwise `owner/name[@revision]` is looked up in the
/// Hugging Face cache `hub.cache`, and downloaded with hf-hub when not cached (with progress;
/// never when `hub.offline`).
pub fn resolve_model(spec: &str, hub: &Hub) -> Result<PathBuf> {
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
    if let Some(dir) = from_cache(&hub.cache, id, &revision) {
        tracing::info!("using cached {id} at {}", dir.display());
        return Ok(dir);
    }
    if hub.offline {
        return Err(Error::Invalid(format!("model `{id}` is not in the Hugging Face cache and HF_HUB_OFFLINE=1")));
    }
    download(&hub.cache, id, &revision)
}

fn repo(id: &str, revision: &str) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, revision.to_string())
}

fn from_cache(cache: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::new(cache.to_path_buf());
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

fn download(cache: &Path, id: &str, revision: &str) -> Result<PathBuf> {
    let unreachable = |e: hf_hub::api::sync::ApiError| {
        Error::Invalid(format!(
            "could not download `{id}` from the Hugging Face Hub ({e}); pass a local folder instead"
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(true)
        .build()
        .map_err(unreachable)?;
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

    fn offline(cache: &Path) -> Hub {
        Hub { cache: cache.to_path_buf(), offline: true }
    }

    #[test]
    fn existing_paths_are_used_as_is_and_nonsense_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hub = offline(dir.path());
        assert_eq!(resolve_model(dir.path().to_str().unwrap(), &hub).unwrap(), dir.path());
        let err = resolve_model("no/such/thing/here", &hub).unwrap_err().to_string();
        assert!(err.contains("owner/name"), "{err}");
    }

    #[test]
    fn offline_hub_ids_missing_from_the_cache_are_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let err = resolve_model("someone/some-model", &offline(cache.path())).unwrap_err().to_string();
        assert!(err.contains("someone/some-model") && err.contains("HF_HUB_OFFLINE"), "{err}");
    }

    #[test]
    fn a_hub_id_in_the_given_cache_is_found_there() {
        let cache = tempfile::tempdir().unwrap();
        let snapshot = cache.path().join("models--someone--some-model").join("snapshots").join("abc");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("config.json"), "{}").unwrap();
        std::fs::write(snapshot.join(SINGLE_FILE), "").unwrap();
        let refs = cache.path().join("models--someone--some-model").join("refs");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("main"), "abc").unwrap();
        assert_eq!(resolve_model("someone/some-model", &offline(cache.path())).unwrap(), snapshot);
    }
}
