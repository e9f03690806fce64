//! `cargo xtask corpus`: what the data pipeline makes of a corpus (book 8.2, 8.3).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rnnlm_data::{Cleaning, Corpus, CorpusSource, DataDirs, TokenKind, count_ngrams, load_corpus};
use serde_json::json;

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// A registered dataset: time-machine or jaychou-lyrics.
    #[arg(long, default_value = "time-machine")]
    pub dataset: String,
    /// Your own UTF-8 text file instead of a registered dataset.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Cleaning of --corpus: letters (the book's) or unicode (keep every character).
    #[arg(long, default_value = "unicode")]
    pub cleaning: Cleaning,
    /// Mirror directory with the dataset files (else RNNLM_DATA_DIR, the cache, a download).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl SourceArgs {
    pub fn source(&self) -> CorpusSource {
        CorpusSource::new(&self.dataset, self.corpus.as_deref(), self.cleaning)
    }
}

#[derive(Debug, Args)]
pub struct CorpusArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// char or word.
    #[arg(long, default_value = "char")]
    pub token: TokenKind,
    /// Keep the first N tokens (0 keeps all).
    #[arg(long, default_value_t = 0)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub min_freq: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also count n-grams for n = 1..=N (N at most 10) and show the most frequent.
    #[arg(long)]
    pub ngrams: Option<usize>,
    /// Write the Zipf's-law figure (n = 1, 2, 3, log-log) as SVG.
    #[arg(long)]
    pub zipf_plot: Option<PathBuf>,
}

fn ngram_rows(corpus: &Corpus, n: usize, top: usize) -> Vec<(String, usize)> {
    let counts = count_ngrams(&corpus.indices, n);
    let sep = if corpus.token == TokenKind::Word {
        " "
    } else {
        ""
    };
    counts
        .counts
        .iter()
        .take(top)
        .map(|(g, c)| (corpus.vocab.to_tokens(g).join(sep), *c))
        .collect()
}

pub fn run(args: &CorpusArgs) -> Result<()> {
    if let Some(n) = args.ngrams
        && !(1..=10).contains(&n)
    {
        anyhow::bail!("--ngrams {n}: expected 1 to 10 (the book counts up to 3)");
    }
    let dirs = DataDirs::from_env(args.source.data_dir.clone());
    let corpus = load_corpus(
        &args.source.source(),
        args.token,
        args.max_tokens,
        args.min_freq,
        &dirs,
    )?;
    let head = &corpus.indices[..corpus.len().min(20)];
    let max_n = args.ngrams.unwrap_or(0);
    if args.json {
        let mut out = json!({
            "vocab_size": corpus.vocab.len(),
            "corpus_len": corpus.len(),
            "idx_to_token": corpus.vocab.idx_to_token(),
            "token_freqs": corpus.vocab.token_freqs(),
            "corpus_head": head,
        });
        if max_n > 0 {
            let grams: serde_json::Map<String, serde_json::Value> = (1..=max_n)
                .map(|n| (n.to_string(), json!(ngram_rows(&corpus, n, 10))))
                .collect();
            out["ngrams"] = json!(grams);
        }
        println!("{out}");
    } else {
        println!("vocab size: {}", corpus.vocab.len());
        println!("corpus length: {} tokens", corpus.len());
        println!("most frequent tokens:");
        for (token, count) in corpus.vocab.token_freqs().iter().take(10) {
            println!("  {token:?} {count}");
        }
        println!("first {} indices: {head:?}", head.len());
        for n in 1..=max_n {
            println!("top {n}-grams:");
            for (gram, count) in ngram_rows(&corpus, n, 10) {
                println!("  {gram:?} {count}");
            }
        }
    }
    if let Some(path) = &args.zipf_plot {
        let names = ["unigram", "bigram", "trigram"];
        let chart = rnnlm_plot::Chart {
            title: "Zipf's law".into(),
            x_label: "token: x (rank)".into(),
            y_label: "frequency: n(x)".into(),
            log_x: true,
            log_y: true,
            series: (1..=3)
                .map(|n| rnnlm_plot::Series {
                    label: names[n - 1].into(),
                    points: count_ngrams(&corpus.indices, n).zipf_points(),
                })
                .collect(),
        };
        rnnlm_data::atomic_write(path, chart.to_svg().as_bytes())?;
        if !args.json {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
