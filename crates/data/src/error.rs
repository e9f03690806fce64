use std::path::PathBuf;

/// Every way preparing a corpus can fail, each naming the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown dataset `{name}`; valid names: {valid}")]
    UnknownDataset { name: String, valid: String },
    #[error("sha1 mismatch for {path}: expected {expected}, got {actual}; the file was not used")]
    Sha1Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    // The io error is the source, which error chains print after this.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { path: PathBuf, offset: usize },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("archive {path} has no usable member `{member}`: {reason}")]
    Archive {
        path: PathBuf,
        member: String,
        reason: String,
    },
    #[error("corpus {source_name} has no tokens after cleaning and tokenizing")]
    EmptyCorpus { source_name: String },
    #[error("invalid {key} = {value}: {expected}")]
    InvalidValue {
        key: &'static str,
        value: String,
        expected: String,
    },
    #[error("invalid vocab file {path}: {reason}")]
    BadVocab { path: PathBuf, reason: String },
}

impl DataError {
    /// What went wrong, without the path: for an error that names the path itself.
    pub fn reason(&self) -> String {
        match self {
            Self::Write { source, .. } | Self::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        key: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidValue {
            key,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
