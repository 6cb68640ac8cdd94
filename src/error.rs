//! The library's error type. Every variant names the file or tensor at fault and what is wrong.

use std::path::PathBuf;

/// Errors raised by the scalpel library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file that could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file being parsed.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A safetensors file or tensor that is malformed.
    #[error("{path}: {message}")]
    BadCheckpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor that is missing from the checkpoint.
    #[error("tensor `{name}` not found in {path}")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A tensor whose shape or dtype does not fit its use.
    #[error("tensor `{name}`: {message}")]
    BadTensor {
        /// The tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A config.json that scalpel cannot use.
    #[error("{path}: {message}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model family scalpel does not support.
    #[error("unsupported architecture {found} in {path}; supported model_type values: {supported}")]
    UnsupportedArchitecture {
        /// What config.json names.
        found: String,
        /// The config file.
        path: PathBuf,
        /// The supported families, comma separated.
        supported: String,
    },
    /// A directions file or direction that cannot be used.
    #[error("{path}: {message}")]
    BadDirections {
        /// The directions file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A request that does not make sense (bad option combination, bad output path).
    #[error("{0}")]
    Invalid(String),
    /// An error from candle while running the model.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A prompt that cannot be run (too long, or the model's numbers are not finite on it), by
    /// its row in a batch (callers name the prompt with [`Error::for_prompt`]).
    #[error("prompt {row} of the batch: {message}")]
    Prompt {
        /// The row of the batch.
        row: usize,
        /// What is not finite.
        message: String,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Name the prompt of a [`Error::Prompt`] row (`prompts`: the batch's prompts); other
    /// errors pass through.
    pub fn for_prompt<S: AsRef<str>>(self, prompts: &[S]) -> Self {
        match self {
            Error::Prompt { row, message } => {
                let text = prompts.get(row).map(|p| p.as_ref()).unwrap_or("?");
                let shown: String = text.chars().take(80).collect();
                let more = if shown.len() < text.len() { "…" } else { "" };
                Error::Other(format!("prompt \"{shown}{more}\": {message}"))
            }
            other => other,
        }
    }

    /// A malformed checkpoint file.
    pub fn bad_checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::BadCheckpoint { path: path.into(), message: message.into() }
    }

    /// A tensor that does not fit its use.
    pub fn bad_tensor(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadTensor { name: name.into(), message: message.into() }
    }
}
