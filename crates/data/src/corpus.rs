//! `load_corpus_time_machine`: a text as one list of token indices and its `Vocab`.

use std::path::{Path, PathBuf};

use crate::fetch::{unzip_member, utf8};
use crate::{
    Cleaning, DataDirs, DataError, TokenKind, Vocab, VocabOver, clean_lines, dataset,
    fetch_dataset, tokenize,
};

/// Where the text comes from.
#[derive(Debug, Clone)]
pub enum CorpusSource {
    /// A registered dataset (`time-machine`, `jaychou-lyrics`).
    Dataset(String),
    /// A user's own UTF-8 text file; vocab over the whole text, then truncation.
    File { path: PathBuf, cleaning: Cleaning },
}

/// Token indices of all lines concatenated with no separator, and their vocabulary.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub indices: Vec<usize>,
    pub vocab: Vocab,
    pub token: TokenKind,
}

impl Corpus {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl CorpusSource {
    /// The user's own file when given, else the registered dataset.
    pub fn new(dataset: &str, file: Option<&Path>, cleaning: Cleaning) -> Self {
        match file {
            Some(path) => Self::File {
                path: path.to_path_buf(),
                cleaning,
            },
            None => Self::Dataset(dataset.to_string()),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Dataset(name) => name.clone(),
            Self::File { path, .. } => path.display().to_string(),
        }
    }

    /// The raw text with its cleaning and vocab rule.
    fn read(&self, dirs: &DataDirs) -> Result<(String, Cleaning, VocabOver), DataError> {
        match self {
            Self::Dataset(name) => {
                let spec = dataset(name)?;
                let bytes = fetch_dataset(spec, dirs)?;
                let path = Path::new(&spec.file);
                let bytes = match &spec.member {
                    Some(member) => unzip_member(&bytes, path, member)?,
                    None => bytes,
                };
                Ok((utf8(bytes, path)?, spec.cleaning, spec.vocab_over))
            }
            Self::File { path, cleaning } => {
                let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
                Ok((utf8(bytes, path)?, *cleaning, VocabOver::All))
            }
        }
    }
}

/// Loads, cleans and tokenizes a text, builds its vocab and maps it to indices,
/// keeping the first `max_tokens` tokens when `max_tokens > 0`.
pub fn load_corpus(
    source: &CorpusSource,
    token: TokenKind,
    max_tokens: usize,
    min_freq: usize,
    dirs: &DataDirs,
) -> Result<Corpus, DataError> {
    let (text, cleaning, vocab_over) = source.read(dirs)?;
    let lines = clean_lines(&text, cleaning);
    let mut tokens: Vec<String> = tokenize(&lines, token).into_iter().flatten().collect();
    let keep = |n: usize| if max_tokens > 0 { n.min(max_tokens) } else { n };
    if vocab_over == VocabOver::Kept {
        tokens.truncate(keep(tokens.len()));
    }
    if tokens.is_empty() {
        return Err(DataError::EmptyCorpus {
            source_name: source.name(),
        });
    }
    let vocab = Vocab::new(tokens.iter().map(String::as_str), min_freq, &[]);
    let mut indices: Vec<usize> = tokens.iter().map(|t| vocab.index(t)).collect();
    indices.truncate(keep(indices.len()));
    Ok(Corpus {
        indices,
        vocab,
        token,
    })
}
