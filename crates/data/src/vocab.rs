//! The book's `Vocab` (section 8.2.3).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

pub const UNK: &str = "<unk>";

/// Token <-> index map: `<unk>` is 0, then reserved tokens, then tokens by descending
/// frequency with ties in first-occurrence order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct Vocab {
    idx_to_token: Vec<String>,
    token_to_idx: HashMap<String, usize>,
    token_freqs: Vec<(String, usize)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    idx_to_token: Vec<String>,
    token_freqs: Vec<(String, usize)>,
}

impl Vocab {
    /// `Vocab(tokens, min_freq, reserved_tokens)`.
    pub fn new<'a>(
        tokens: impl IntoIterator<Item = &'a str>,
        min_freq: usize,
        reserved_tokens: &[&str],
    ) -> Self {
        // (count, first occurrence) per token; Python's Counter keeps insertion order
        // and `sorted(..., reverse=True)` is stable, so ties keep first-occurrence order.
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, token) in tokens.into_iter().enumerate() {
            counts.entry(token).or_insert((0, i)).0 += 1;
        }
        let mut by_freq: Vec<(&str, (usize, usize))> = counts.into_iter().collect();
        by_freq.sort_by_key(|&(_, (count, first))| (std::cmp::Reverse(count), first));
        let token_freqs: Vec<(String, usize)> = by_freq
            .iter()
            .map(|&(t, (n, _))| (t.to_string(), n))
            .collect();

        let mut idx_to_token: Vec<String> = std::iter::once(UNK)
            .chain(reserved_tokens.iter().copied())
            .map(String::from)
            .collect();
        let mut token_to_idx: HashMap<String, usize> = idx_to_token
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        for (token, freq) in &token_freqs {
            if *freq < min_freq {
                break;
            }
            if !token_to_idx.contains_key(token) {
                token_to_idx.insert(token.clone(), idx_to_token.len());
                idx_to_token.push(token.clone());
            }
        }
        Self {
            idx_to_token,
            token_to_idx,
            token_freqs,
        }
    }

    pub fn len(&self) -> usize {
        self.idx_to_token.len()
    }

    pub fn is_empty(&self) -> bool {
        false // `<unk>` is always present
    }

    /// Index of a token; unknown tokens map to `<unk>` (0).
    pub fn index(&self, token: &str) -> usize {
        self.token_to_idx.get(token).copied().unwrap_or(0)
    }

    /// Whether the token has its own index.
    pub fn contains(&self, token: &str) -> bool {
        self.token_to_idx.contains_key(token)
    }

    pub fn to_token(&self, index: usize) -> &str {
        self.idx_to_token.get(index).map_or(UNK, String::as_str)
    }

    pub fn to_tokens(&self, indices: &[usize]) -> Vec<&str> {
        indices.iter().map(|&i| self.to_token(i)).collect()
    }

    pub fn idx_to_token(&self) -> &[String] {
        &self.idx_to_token
    }

    /// Every token of the text with its count, descending (before `min_freq`).
    pub fn token_freqs(&self) -> &[(String, usize)] {
        &self.token_freqs
    }

    /// A vocabulary of exactly these tokens in this index order (`<unk>` first), e.g. a
    /// PyTorch model's dictionary; no frequencies.
    pub fn from_tokens(idx_to_token: Vec<String>) -> Result<Self, String> {
        Self::try_from(VocabFile {
            idx_to_token,
            token_freqs: Vec::new(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = serde_json::to_string(self).expect("a vocab always serializes");
        crate::atomic_write(path, json.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| DataError::BadVocab {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

impl TryFrom<VocabFile> for Vocab {
    type Error = String;
    fn try_from(file: VocabFile) -> Result<Self, String> {
        if file.idx_to_token.first().map(String::as_str) != Some(UNK) {
            return Err(format!("idx_to_token must start with `{UNK}`"));
        }
        let mut token_to_idx = HashMap::new();
        for (i, token) in file.idx_to_token.iter().enumerate() {
            if token_to_idx.insert(token.clone(), i).is_some() {
                return Err(format!("token `{token}` appears twice in idx_to_token"));
            }
        }
        Ok(Self {
            idx_to_token: file.idx_to_token,
            token_to_idx,
            token_freqs: file.token_freqs,
        })
    }
}

impl From<Vocab> for VocabFile {
    fn from(v: Vocab) -> Self {
        Self {
            idx_to_token: v.idx_to_token,
            token_freqs: v.token_freqs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_frequency_then_first_occurrence() {
        let v = Vocab::new("b a c a b d".split(' '), 0, &[]);
        assert_eq!(v.idx_to_token(), ["<unk>", "b", "a", "c", "d"]);
        assert_eq!(v.index("a"), 2);
        assert_eq!(v.index("zzz"), 0);
        assert_eq!(v.to_tokens(&[1, 4, 99]), ["b", "d", "<unk>"]);
    }

    #[test]
    fn min_freq_and_reserved_tokens() {
        let v = Vocab::new("x x y z z z".split(' '), 2, &["<pad>", "<bos>"]);
        assert_eq!(v.idx_to_token(), ["<unk>", "<pad>", "<bos>", "z", "x"]);
        // token_freqs keeps the tokens below min_freq, as the book's does.
        assert_eq!(v.token_freqs().last().unwrap(), &("y".to_string(), 1));
    }

    #[test]
    fn json_round_trip_and_validation() {
        let v = Vocab::new("a b b".split(' '), 0, &[]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.json");
        v.save(&path).unwrap();
        assert_eq!(Vocab::load(&path).unwrap(), v);
        std::fs::write(&path, r#"{"idx_to_token":["a","<unk>"],"token_freqs":[]}"#).unwrap();
        let err = Vocab::load(&path).unwrap_err().to_string();
        assert!(err.contains("vocab.json") && err.contains("<unk>"), "{err}");
    }
}
