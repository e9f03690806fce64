//! The corpus facts Dive into Deep Learning prints, on the real corpora
//! (`RNNLM_DATA_DIR`, default `../shared/datasets` beside the repository),
//! and the sampler invariants.

use std::path::PathBuf;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rnnlm_data::*;

fn dirs() -> DataDirs {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    let mirror = std::env::var_os("RNNLM_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or(default);
    DataDirs {
        mirror: Some(mirror),
        // Never download in tests: an empty cache that cannot be created lives nowhere.
        cache: PathBuf::from("/nonexistent/rnnlm-test-cache"),
    }
}

fn time_machine(token: TokenKind, max_tokens: usize) -> Corpus {
    load_corpus(
        &CorpusSource::Dataset("time-machine".into()),
        token,
        max_tokens,
        0,
        &dirs(),
    )
    .unwrap()
}

#[test]
fn char_level_time_machine_as_the_book_prints() {
    let corpus = time_machine(TokenKind::Char, 0);
    assert_eq!(corpus.vocab.len(), 28);
    assert_eq!(corpus.len(), 170_580);
    assert_eq!(
        &corpus.vocab.idx_to_token()[..10],
        ["<unk>", " ", "e", "t", "a", "i", "n", "o", "s", "h"]
    );
    // The first line is "the time machine by h g wells".
    let head: Vec<&str> = corpus.vocab.to_tokens(&corpus.indices[..16]);
    assert_eq!(head.concat(), "the time machine");
    assert_eq!(time_machine(TokenKind::Char, 10_000).len(), 10_000);
}

#[test]
fn word_level_time_machine_as_the_book_prints() {
    let corpus = time_machine(TokenKind::Word, 0);
    assert_eq!(
        &corpus.vocab.idx_to_token()[..10],
        [
            "<unk>", "the", "i", "and", "of", "a", "to", "was", "in", "that"
        ]
    );
    let top: Vec<(&str, usize)> = corpus.vocab.token_freqs()[..10]
        .iter()
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    assert_eq!(
        top,
        [
            ("the", 2261),
            ("i", 1267),
            ("and", 1245),
            ("of", 1155),
            ("a", 816),
            ("to", 695),
            ("was", 552),
            ("in", 541),
            ("that", 443),
            ("my", 440)
        ]
    );
}

#[test]
fn word_bigrams_and_trigrams_as_the_book_prints() {
    let corpus = time_machine(TokenKind::Word, 0);
    let show = |n: usize| -> Vec<(String, usize)> {
        count_ngrams(&corpus.indices, n).counts[..10]
            .iter()
            .map(|(g, c)| (corpus.vocab.to_tokens(g).join(" "), *c))
            .collect()
    };
    let book = |rows: &[(&str, usize)]| -> Vec<(String, usize)> {
        rows.iter().map(|(g, c)| (g.to_string(), *c)).collect()
    };
    // bigram_vocab.token_freqs[:10] and trigram_vocab.token_freqs[:10] in section 8.3.
    assert_eq!(
        show(2),
        book(&[
            ("of the", 309),
            ("in the", 169),
            ("i had", 130),
            ("i was", 112),
            ("and the", 109),
            ("the time", 102),
            ("it was", 99),
            ("to the", 85),
            ("as i", 78),
            ("of a", 73)
        ])
    );
    assert_eq!(
        show(3),
        book(&[
            ("the time traveller", 59),
            ("the time machine", 30),
            ("the medical man", 24),
            ("it seemed to", 16),
            ("it was a", 15),
            ("here and there", 15),
            ("seemed to me", 14),
            ("i did not", 14),
            ("i saw the", 13),
            ("i began to", 13)
        ])
    );
}

#[test]
fn jaychou_lyrics_as_the_first_edition_prepares_them() {
    let source = CorpusSource::Dataset("jaychou-lyrics".into());
    let all = load_corpus(&source, TokenKind::Char, 0, 0, &dirs()).unwrap();
    assert_eq!(all.len(), 63_282);
    let kept = load_corpus(&source, TokenKind::Char, 10_000, 0, &dirs()).unwrap();
    assert_eq!(kept.len(), 10_000);
    // 1,027 distinct characters, plus `<unk>`.
    assert_eq!(kept.vocab.len(), 1_028);
    let head = kept.vocab.to_tokens(&kept.indices[..6]).concat();
    assert_eq!(head, "想要有直升机");
}

#[test]
fn bad_input_is_a_clear_error() {
    let d = dirs();
    let err = load_corpus(
        &CorpusSource::Dataset("nope".into()),
        TokenKind::Char,
        0,
        0,
        &d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("time-machine"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let missing = CorpusSource::File {
        path: tmp.join("missing.txt"),
        valid: None,
        test: None,
        cleaning: Cleaning::Letters,
    };
    let err = load_corpus(&missing, TokenKind::Char, 0, 0, &d).unwrap_err();
    assert!(err.to_string().contains("missing.txt"), "{err}");

    std::fs::write(tmp.join("digits.txt"), "1234 5678\n!!!\n").unwrap();
    let empty = CorpusSource::File {
        path: tmp.join("digits.txt"),
        valid: None,
        test: None,
        cleaning: Cleaning::Letters,
    };
    let err = load_corpus(&empty, TokenKind::Char, 0, 0, &d).unwrap_err();
    assert!(err.to_string().contains("no tokens"), "{err}");

    std::fs::write(tmp.join("latin1.txt"), b"caf\xe9").unwrap();
    let bad = CorpusSource::File {
        path: tmp.join("latin1.txt"),
        valid: None,
        test: None,
        cleaning: Cleaning::Unicode,
    };
    let err = load_corpus(&bad, TokenKind::Char, 0, 0, &d).unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");

    let mut rng = StdRng::seed_from_u64(0);
    let corpus: Vec<usize> = (0..100).collect();
    for (b, t, key) in [
        (0, 5, "batch_size"),
        (4, 0, "num_steps"),
        (10, 10, "batch_size x num_steps"),
    ] {
        let err = epoch_batches(&corpus, b, t, Sampler::Random, &mut rng).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!("invalid {key}")),
            "{err}"
        );
    }
}

#[test]
fn user_file_corpus_works() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    std::fs::write(tmp.join("own.txt"), "Hello, hello world!\n").unwrap();
    let own = CorpusSource::File {
        path: tmp.join("own.txt"),
        valid: None,
        test: None,
        cleaning: Cleaning::Letters,
    };
    let c = load_corpus(&own, TokenKind::Word, 0, 0, &dirs()).unwrap();
    assert_eq!(c.vocab.idx_to_token(), ["<unk>", "hello", "world"]);
    assert_eq!(c.indices, [1, 1, 2]);
}

#[test]
fn book_sizes_give_eight_batches_for_every_offset() {
    let corpus = time_machine(TokenKind::Char, 10_000);
    for seed in 0..40 {
        for sampler in [Sampler::Random, Sampler::Sequential] {
            let mut rng = StdRng::seed_from_u64(seed);
            let batches = epoch_batches(&corpus.indices, 32, 35, sampler, &mut rng).unwrap();
            assert_eq!(batches.len(), 8, "{sampler:?} seed {seed}");
            assert_eq!(batches.iter().map(|b| b.y.len()).sum::<usize>(), 8_960);
        }
    }
}

#[test]
fn batches_become_int_tensors() {
    let device = burn::tensor::Device::flex();
    let corpus: Vec<usize> = (0..50).collect();
    let batch = epoch_batches(
        &corpus,
        2,
        3,
        Sampler::Sequential,
        &mut StdRng::seed_from_u64(1),
    )
    .unwrap()
    .get(0);
    let (x, y) = batch.to_tensors(&device);
    assert_eq!(x.dims(), [2, 3]);
    let xs: Vec<i64> = x.into_data().iter::<i64>().collect();
    let ys: Vec<i64> = y.into_data().iter::<i64>().collect();
    assert!(xs.iter().zip(&ys).all(|(a, b)| b - a == 1));
}

/// Where `window` (a slice of the corpus values 0..len) starts.
fn start_of(window: &[usize]) -> usize {
    window[0]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    // The corpus 0..len makes every token its own position, so positions are visible.
    #[test]
    fn sequential_rows_continue_and_y_is_x_shifted(
        len in 20usize..600, batch_size in 1usize..6, num_steps in 1usize..9, seed in any::<u64>(),
        batchify in any::<bool>()
    ) {
        prop_assume!(len > batch_size * num_steps + num_steps);
        let corpus: Vec<usize> = (0..len).collect();
        let sampler = if batchify { Sampler::Batchify } else { Sampler::Sequential };
        let batches = epoch_batches(&corpus, batch_size, num_steps, sampler, &mut StdRng::seed_from_u64(seed)).unwrap();
        prop_assert!(!batches.is_empty());
        // Count as the book: offset in 0..=num_steps; word_language_model's batchify: 0.
        let offset = start_of(&batches.get(0).x);
        let most = if batchify { 0 } else { num_steps };
        prop_assert!(offset <= most);
        let row_len = (len - offset - 1) / batch_size;
        prop_assert_eq!(batches.len(), row_len / num_steps);
        for (k, batch) in batches.iter().enumerate() {
            for b in 0..batch_size {
                let row = &batch.x[b * num_steps..(b + 1) * num_steps];
                let y_row = &batch.y[b * num_steps..(b + 1) * num_steps];
                // Row b of batch k starts where row b of batch k-1 ended.
                prop_assert_eq!(start_of(row), offset + b * row_len + k * num_steps);
                for t in 0..num_steps {
                    prop_assert_eq!(y_row[t], row[t] + 1);
                    if t > 0 { prop_assert_eq!(row[t], row[t - 1] + 1); }
                }
            }
        }
    }

    #[test]
    fn random_batches_cover_distinct_aligned_subsequences(
        len in 20usize..600, batch_size in 1usize..6, num_steps in 1usize..9, seed in any::<u64>()
    ) {
        prop_assume!(len > batch_size * num_steps + num_steps);
        let corpus: Vec<usize> = (0..len).collect();
        let batches = epoch_batches(&corpus, batch_size, num_steps, Sampler::Random, &mut StdRng::seed_from_u64(seed)).unwrap();
        let mut starts = Vec::new();
        for batch in batches.iter() {
            for b in 0..batch_size {
                let row = &batch.x[b * num_steps..(b + 1) * num_steps];
                for (y, x) in batch.y[b * num_steps..].iter().zip(row) {
                    prop_assert_eq!(*y, x + 1);
                }
                starts.push(start_of(row));
            }
        }
        let offset = starts.iter().min().unwrap() % num_steps;
        prop_assert!(offset < num_steps);
        let num_subseqs = (len - offset - 1) / num_steps;
        prop_assert_eq!(batches.len(), num_subseqs / batch_size);
        let mut sorted = starts.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), starts.len(), "subsequences repeat");
        prop_assert!(starts.iter().all(|s| (s - offset) % num_steps == 0 && s + num_steps < len));
    }
}

/// A file in a fresh temp directory holding `bytes`.
fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let path = std::env::temp_dir().join(format!("rnnlm-prop-{tag}-{}-{n}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Text-like bytes: mostly words, spaces and line breaks, some invalid UTF-8, some very
/// long lines.
fn texty() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(b"ab cd\n\n e".to_vec()),
            1 => any::<u8>(),
            1 => Just(b'x'),
        ],
        0..3000,
    )
}

proptest! {
    // Any bytes as a training text, with valid/test files and fractions: a corpus whose
    // splits partition the tokens, or an error naming the file; never a panic.
    #[test]
    fn corpus_loaders_take_any_bytes(
        train in texty(), valid in texty(), word in any::<bool>(), eos in any::<bool>(),
        own_splits in any::<bool>(), fraction in 0.0f64..0.5, max_tokens in 0usize..500,
        min_freq in 0usize..3,
    ) {
        let path = temp_file("train", &train);
        let (valid_path, test_path) = (temp_file("valid", &valid), temp_file("test", &valid));
        let token = if word { TokenKind::Word } else { TokenKind::Char };
        let source = CorpusSource::File {
            path: path.clone(),
            valid: own_splits.then(|| valid_path.clone()),
            test: own_splits.then(|| test_path.clone()),
            cleaning: Cleaning::Lines,
        };
        let options = LoadOptions {
            token, max_tokens, min_freq, eos: eos && word,
            valid_fraction: if own_splits { 0.0 } else { fraction },
            test_fraction: 0.0,
        };
        match load_corpus_with(&source, &options, &dirs()) {
            Ok(c) => {
                prop_assert!(std::str::from_utf8(&train).is_ok());
                prop_assert!(c.indices.iter().chain(&c.valid).all(|&i| i < c.vocab.len()));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("rnnlm-prop-"), "{}", msg);
            }
        }
        for p in [path, valid_path, test_path] { std::fs::remove_file(p).unwrap(); }
    }

    // A vocab.json of any bytes, or of JSON with wrong shapes: a vocabulary or an error
    // naming the file.
    #[test]
    fn vocab_reader_takes_any_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            Just(br#"{"idx_to_token":["a","<unk>"],"token_freqs":[]}"#.to_vec()),
            Just(br#"{"idx_to_token":["<unk>","a","a"],"token_freqs":[]}"#.to_vec()),
            Just(br#"{"idx_to_token":["<unk>","a"],"token_freqs":[["a",-1]]}"#.to_vec()),
            Just(br#"{"idx_to_token":["<unk>","a"],"token_freqs":[["b",18446744073709551615]]}"#.to_vec()),
            Just(br#"{"idx_to_token":[],"token_freqs":[]}"#.to_vec()),
        ]
    ) {
        let path = temp_file("vocab", &bytes);
        match Vocab::load(&path) {
            Ok(v) => prop_assert_eq!(v.to_token(0), "<unk>"),
            Err(e) => prop_assert!(e.to_string().contains("rnnlm-prop-vocab"), "{}", e),
        }
        std::fs::remove_file(path).unwrap();
    }
}
