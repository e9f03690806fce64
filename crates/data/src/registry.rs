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
}

impl std::str::FromStr for Cleaning {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "letters" => Ok(Self::Letters),
            "unicode" => Ok(Self::Unicode),
            _ => Err(DataError::invalid("cleaning", s, "`letters` or `unicode`")),
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
    pub cleaning: Cleaning,
    pub vocab_over: VocabOver,
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
        assert_eq!(dataset_names(), ["jaychou-lyrics", "time-machine"]);
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
