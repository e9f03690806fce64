//! `cargo xtask ngram`: the book's Laplace-smoothed n-gram models (8.3) as a baseline,
//! scored on the held-out tail that `data.test_fraction` keeps from the RNN.

use anyhow::{Result, bail};
use clap::Args;
use rnnlm_data::{DataDirs, NgramModel, TokenKind, count_ngrams, load_corpus, tail_start};

use crate::corpus::SourceArgs;

#[derive(Debug, Args)]
pub struct NgramArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// char or word.
    #[arg(long, default_value = "char")]
    pub token: TokenKind,
    /// 1, 2 or 3.
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Laplace constants e1,e2,e3.
    #[arg(long, default_value = "1,1,1", value_delimiter = ',')]
    pub eps: Vec<f64>,
    /// Keep the first N tokens (0 keeps all), as data.max_tokens.
    #[arg(long, default_value_t = 10_000)]
    pub max_tokens: usize,
    /// Fraction held out at the end of the corpus, as data.test_fraction.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
}

pub fn run(args: &NgramArgs) -> Result<()> {
    if !(1..=3).contains(&args.n) {
        bail!("--n {}: expected 1, 2 or 3", args.n);
    }
    let eps: [f64; 3] = match args.eps[..] {
        [a, b, c]
            if [a, b, c].iter().all(|e| e.is_finite() && *e >= 0.0)
                && [a, b, c][..args.n].iter().all(|e| *e > 0.0) =>
        {
            [a, b, c]
        }
        _ => bail!(
            "--eps {:?}: expected three numbers e1,e2,e3 >= 0, the first --n of them positive (0 gives unseen n-grams probability 0: an infinite or undefined perplexity)",
            args.eps
        ),
    };
    if !(0.0 < args.holdout && args.holdout <= 0.5) {
        bail!(
            "--holdout {}: expected a fraction in (0, 0.5]",
            args.holdout
        );
    }
    let dirs = DataDirs::from_env(args.source.data_dir.clone());
    let corpus = load_corpus(&args.source.source(), args.token, args.max_tokens, 0, &dirs)?;
    let cut = tail_start(corpus.len(), args.holdout);
    let sep = if args.token == TokenKind::Word {
        " "
    } else {
        ""
    };
    let read = match args.max_tokens {
        0 => "the whole corpus".to_string(),
        n => format!(
            "the first {} tokens (--max-tokens {n}; 0 reads all)",
            corpus.len()
        ),
    };
    println!("top {}-grams of {read}:", args.n);
    for (gram, count) in count_ngrams(&corpus.indices, args.n).counts.iter().take(10) {
        println!("  {:?} {count}", corpus.vocab.to_tokens(gram).join(sep));
    }
    let lm = NgramModel::fit(&corpus.indices[..cut], args.n, corpus.vocab.len(), eps);
    println!(
        "{}-gram model (eps {:?}) trained on the first {cut} tokens: perplexity {:.3} on the last {} (train {:.3})",
        args.n,
        eps,
        lm.perplexity(&corpus.indices, cut),
        corpus.len() - cut,
        lm.perplexity(&corpus.indices[..cut], 0)
    );
    Ok(())
}
