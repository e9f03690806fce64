//! Everything a language model needs before the model: the dataset registry and
//! verified fetching, the book's text cleaning and tokenization, `Vocab`, the
//! corpus as token indices, the random and sequential minibatch samplers, and
//! n-gram statistics and models (Dive into Deep Learning, sections 8.2 and 8.3), and
//! the sine-wave series of section 8.1.

mod corpus;
mod error;
mod fetch;
mod files;
mod ngram;
mod registry;
mod sampler;
mod sine;
mod text;
mod vocab;

pub use corpus::{Corpus, CorpusSource, LoadOptions, load_corpus, load_corpus_with, tail_start};
pub use error::DataError;
pub use fetch::{DataDirs, fetch_dataset, sha1_hex};
pub use files::atomic_write;
pub use ngram::{NgramCounts, NgramModel, count_ngrams};
pub use registry::{Cleaning, DatasetSpec, SplitMembers, VocabOver, dataset, dataset_names};
pub use sampler::{Batch, Minibatches, Sampler, epoch_batches};
pub use sine::{autoregressive_features, sine_series, standard_normal};
pub use text::{EOS, Interner, TokenKind, clean_lines, text_token_ids, text_tokens, tokenize};
pub use vocab::Vocab;
