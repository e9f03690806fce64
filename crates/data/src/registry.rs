//! The dataset registry (`datasets/registry.toml`, compiled in).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::DataError;

/// How raw lines become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleaning {
    /// The book's `read_time_machine`: every run of non-`[A-Za-z]` becomes one space,
    /// then strip and lowercase.
    Letters,
    /// The first edition's lyrics: keep every Unicode character, line breaks become spaces
    /// (the whole file is one line).
    Unicode,
    /// Keep everything, line breaks included: characters as char-rnn and nanoGPT read them,
    /// lines as word_language_model reads them (each line's words, then `<eos>`).
    Lines,
}

impl std::str::FromStr for Cleaning {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "letters" => Ok(Self::Letters),
            "unicode" => Ok(Self::Unicode),
            "lines" => Ok(Self::Lines),
            _ => Err(DataError::invalid(
                "cleaning",
                s,
                "`letters`, `unicode` or `lines`",
            )),
        }
    }
}

/// Whether the vocabulary is built before or after truncating to `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VocabOver {
    /// `load_corpus_time_machine`: vocab over all tokens, then truncate.
    All,
    /// First edition: truncate the text, then build the vocab from what is kept.
    Kept,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    #[serde(skip)]
    pub name: String,
    pub url: String,
    pub file: String,
    pub sha1: String,
    pub member: Option<String>,
    /// The members of a zip that comes split into train, valid and test.
    pub splits: Option<SplitMembers>,
    pub cleaning: Cleaning,
    pub vocab_over: VocabOver,
    /// Compiled into the binary from `datasets/` (public domain and small).
    #[serde(default)]
    pub shipped: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitMembers {
    pub train: String,
    pub valid: String,
    pub test: String,
}

/// The bytes of a shipped dataset file, compiled in.
pub(crate) fn shipped_bytes(file: &str) -> Option<&'static [u8]> {
    match file {
        "timemachine.txt" => Some(include_bytes!("../../../datasets/timemachine.txt")),
        "tinyshakespeare.txt" => Some(include_bytes!("../../../datasets/tinyshakespeare.txt")),
        _ => None,
    }
}

fn registry() -> &'static BTreeMap<String, DatasetSpec> {
    static REGISTRY: OnceLock<BTreeMap<String, DatasetSpec>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut map: BTreeMap<String, DatasetSpec> =
            toml::from_str(include_str!("../../../datasets/registry.toml"))
                .expect("datasets/registry.toml is checked by the registry_parses test");
        for (name, spec) in map.iter_mut() {
            spec.name = name.clone();
        }
        map
    })
}

/// Names of all registered datasets.
pub fn dataset_names() -> Vec<&'static str> {
    registry().keys().map(String::as_str).collect()
}

/// Look a dataset up by name.
pub fn dataset(name: &str) -> Result<&'static DatasetSpec, DataError> {
    registry()
        .get(name)
        .ok_or_else(|| DataError::UnknownDataset {
            name: name.to_string(),
            valid: dataset_names().join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_parses_with_the_issue_sha1s() {
        assert_eq!(
            dataset_names(),
            ["jaychou-lyrics", "ptb", "time-machine", "tinyshakespeare"]
        );
        // Exactly the public-domain corpora are shipped, and their bytes are compiled in.
        for name in dataset_names() {
            let spec = dataset(name).unwrap();
            assert_eq!(
                spec.shipped,
                ["time-machine", "tinyshakespeare"].contains(&name),
                "{name}"
            );
            let bytes = shipped_bytes(&spec.file);
            assert_eq!(bytes.is_some(), spec.shipped, "{name}");
            if let Some(bytes) = bytes {
                assert_eq!(crate::sha1_hex(bytes), spec.sha1, "{name}");
            }
        }
        assert_eq!(
            dataset("ptb").unwrap().sha1,
            "319d85e578af0cdc590547f26231e4e31cdf1e42"
        );
        let tm = dataset("time-machine").unwrap();
        assert_eq!(tm.sha1, "090b5e7e70c295757f55df93cb0a180b9691891a");
        assert_eq!(
            dataset("jaychou-lyrics").unwrap().sha1,
            "9529987e701a4f37048ab778270a5dde9a762a0b"
        );
        let err = dataset("shakespeare").unwrap_err().to_string();
        assert!(
            err.contains("shakespeare") && err.contains("time-machine"),
            "{err}"
        );
    }
}
