//! `load_corpus_time_machine` grown to real corpora: a text as token indices with its
//! `Vocab`, and the validation and test splits beside the training one.

use std::path::{Path, PathBuf};

use crate::fetch::{unzip_member, utf8};
use crate::{
    Cleaning, DataDirs, DataError, Interner, TokenKind, Vocab, VocabOver, dataset, fetch_dataset,
    text_token_ids,
};

/// Where the text comes from.
#[derive(Debug, Clone)]
pub enum CorpusSource {
    /// A registered dataset (`time-machine`, `tinyshakespeare`, `ptb`, ...).
    Dataset(String),
    /// A user's own UTF-8 text files: the training text, and optionally its own
    /// validation and test texts.
    File {
        path: PathBuf,
        valid: Option<PathBuf>,
        test: Option<PathBuf>,
        cleaning: Cleaning,
    },
}

/// How a source becomes token indices.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub token: TokenKind,
    /// Keep the first `max_tokens` training tokens; 0 keeps all.
    pub max_tokens: usize,
    /// Tokens rarer than this map to `<unk>`.
    pub min_freq: usize,
    /// Append `<eos>` to every line (word level, as word_language_model).
    pub eos: bool,
    /// A one-text corpus splits its tail: train is the head, then valid, then test.
    pub valid_fraction: f64,
    pub test_fraction: f64,
}

impl LoadOptions {
    /// One text, no splits (the book's chapter 8).
    pub fn book(token: TokenKind, max_tokens: usize, min_freq: usize) -> Self {
        Self {
            token,
            max_tokens,
            min_freq,
            eos: false,
            valid_fraction: 0.0,
            test_fraction: 0.0,
        }
    }
}

/// The training token indices, the validation and test ones (empty when the corpus has
/// none), and the vocabulary.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The training split.
    pub indices: Vec<usize>,
    pub valid: Vec<usize>,
    pub test: Vec<usize>,
    pub vocab: Vocab,
    pub token: TokenKind,
}

impl Corpus {
    /// Tokens in the training split.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The raw texts of a source: one, or train/valid/test.
enum Texts {
    One(String),
    Split([String; 3]),
}

impl CorpusSource {
    /// The user's own file when given, else the registered dataset.
    pub fn new(dataset: &str, file: Option<&Path>, cleaning: Cleaning) -> Self {
        match file {
            Some(path) => Self::File {
                path: path.to_path_buf(),
                valid: None,
                test: None,
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

    /// The raw texts with their cleaning and vocab rule.
    fn read(&self, dirs: &DataDirs) -> Result<(Texts, Cleaning, VocabOver), DataError> {
        match self {
            Self::Dataset(name) => {
                let spec = dataset(name)?;
                let bytes = fetch_dataset(spec, dirs)?;
                let path = Path::new(&spec.file);
                let member = |m: &str| -> Result<String, DataError> {
                    utf8(unzip_member(&bytes, path, m)?, &path.join(m))
                };
                let texts = match (&spec.splits, &spec.member) {
                    (Some(s), _) => {
                        Texts::Split([member(&s.train)?, member(&s.valid)?, member(&s.test)?])
                    }
                    (None, Some(m)) => Texts::One(member(m)?),
                    (None, None) => Texts::One(utf8(bytes, path)?),
                };
                Ok((texts, spec.cleaning, spec.vocab_over))
            }
            Self::File {
                path,
                valid,
                test,
                cleaning,
            } => {
                let read = |p: &Path| -> Result<String, DataError> {
                    let bytes = std::fs::read(p).map_err(|e| DataError::io(p, e))?;
                    utf8(bytes, p)
                };
                let read_opt = |p: &Option<PathBuf>| -> Result<String, DataError> {
                    p.as_deref().map_or(Ok(String::new()), read)
                };
                let texts = if valid.is_some() || test.is_some() {
                    Texts::Split([read(path)?, read_opt(valid)?, read_opt(test)?])
                } else {
                    Texts::One(read(path)?)
                };
                Ok((texts, *cleaning, VocabOver::All))
            }
        }
    }
}

/// The index where the tail of `fraction` of `len` tokens begins.
pub fn tail_start(len: usize, fraction: f64) -> usize {
    len - ((len as f64 * fraction).round() as usize).min(len)
}

/// `load_corpus_with` for one text and no splits (the book's chapter 8).
pub fn load_corpus(
    source: &CorpusSource,
    token: TokenKind,
    max_tokens: usize,
    min_freq: usize,
    dirs: &DataDirs,
) -> Result<Corpus, DataError> {
    load_corpus_with(
        source,
        &LoadOptions::book(token, max_tokens, min_freq),
        dirs,
    )
}

/// Loads, cleans and tokenizes a source, splits it, builds the vocab and maps every split
/// to indices. Without held-out splits the vocab follows the dataset's `vocab_over` rule
/// (the book's); with them it is built from the training split only, and the other splits
/// map unseen tokens to `<unk>`.
pub fn load_corpus_with(
    source: &CorpusSource,
    opts: &LoadOptions,
    dirs: &DataDirs,
) -> Result<Corpus, DataError> {
    let (texts, cleaning, vocab_over) = source.read(dirs)?;
    let mut interner = Interner::default();
    let mut ids = |text: &str| text_token_ids(text, cleaning, opts.token, opts.eos, &mut interner);
    let keep = |n: usize| {
        if opts.max_tokens > 0 {
            n.min(opts.max_tokens)
        } else {
            n
        }
    };
    let split: [Vec<u32>; 3];
    let (all, [train, valid, test]) = match texts {
        Texts::Split(texts) => {
            split = texts.map(|text| ids(&text));
            let [train, valid, test] = &split;
            (None, [&train[..keep(train.len())], &valid[..], &test[..]])
        }
        Texts::One(text) => {
            let all = ids(&text);
            let n = keep(all.len());
            let test_at = tail_start(n, opts.test_fraction);
            let valid_at = tail_start(n, opts.valid_fraction + opts.test_fraction);
            split = [all, Vec::new(), Vec::new()];
            let all = &split[0];
            (
                Some(&all[..]),
                [&all[..valid_at], &all[valid_at..test_at], &all[test_at..n]],
            )
        }
    };
    if train.is_empty() {
        return Err(DataError::EmptyCorpus {
            source_name: source.name(),
        });
    }
    let held_out = !valid.is_empty() || !test.is_empty();
    let vocab_ids = match (held_out, vocab_over, all) {
        (false, VocabOver::All, Some(all)) => all,
        _ => train,
    };
    let vocab = Vocab::new(
        vocab_ids.iter().map(|&id| interner.token(id)),
        opts.min_freq,
        &[],
    );
    // Each distinct token's index once, then a table lookup per token.
    let index: Vec<usize> = (interner.tokens().iter()).map(|t| vocab.index(t)).collect();
    let to_indices =
        |ids: &[u32]| -> Vec<usize> { ids.iter().map(|&id| index[id as usize]).collect() };
    Ok(Corpus {
        indices: to_indices(train),
        valid: to_indices(valid),
        test: to_indices(test),
        vocab,
        token: opts.token,
    })
}
