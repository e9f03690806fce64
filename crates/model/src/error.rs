use std::path::PathBuf;

/// Errors of building, loading and running models, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: tensor `{name}` is missing")]
    MissingTensor { file: String, name: String },
    #[error("{file}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    BadShape {
        file: String,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{file}: tensor `{name}` has dtype {dtype}, expected one of F32, F64, I64")]
    BadDtype {
        file: String,
        name: String,
        dtype: String,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("the prefix is empty; give at least one token")]
    EmptyPrefix,
    #[error("invalid {key} = {value}: {expected}")]
    InvalidValue {
        key: &'static str,
        value: String,
        expected: String,
    },
}
