//! n-gram frequency tables (book section 8.3.2).

use std::collections::HashMap;

/// n-grams of a token sequence with their counts, descending, ties in first-occurrence
/// order (the book's `Vocab(ngram_tokens).token_freqs`).
#[derive(Debug, Clone, PartialEq)]
pub struct NgramCounts {
    pub n: usize,
    pub counts: Vec<(Vec<usize>, usize)>,
}

/// Counts every window of `n` consecutive indices.
pub fn count_ngrams(indices: &[usize], n: usize) -> NgramCounts {
    assert!(n > 0, "n-grams need n >= 1");
    let mut table: HashMap<&[usize], (usize, usize)> = HashMap::new();
    for (i, gram) in indices.windows(n).enumerate() {
        table.entry(gram).or_insert((0, i)).0 += 1;
    }
    let mut rows: Vec<_> = table.into_iter().collect();
    rows.sort_by_key(|&(_, (count, first))| (std::cmp::Reverse(count), first));
    NgramCounts {
        n,
        counts: rows
            .into_iter()
            .map(|(g, (c, _))| (g.to_vec(), c))
            .collect(),
    }
}

impl NgramCounts {
    /// `(rank, frequency)` points for a Zipf plot, rank starting at 1.
    pub fn zipf_points(&self) -> Vec<(f64, f64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(rank, (_, count))| ((rank + 1) as f64, *count as f64))
            .collect()
    }
}

/// Unigram, bigram and trigram language models with the book's Laplace smoothing
/// (section 8.3.3), over token indices in `0..m`:
///
/// - `P(x) = (n(x) + e1 / m) / (n + e1)`
/// - `P(x'|x) = (n(x, x') + e2 P(x')) / (n(x) + e2)`
/// - `P(x''|x, x') = (n(x, x', x'') + e3 P(x'')) / (n(x, x') + e3)`
#[derive(Debug, Clone)]
pub struct NgramModel {
    pub n: usize,
    /// Number of possible tokens (the vocab size), so each distribution sums to one.
    pub m: usize,
    pub eps: [f64; 3],
    total: usize,
    uni: HashMap<usize, usize>,
    bi: HashMap<(usize, usize), usize>,
    tri: HashMap<(usize, usize, usize), usize>,
}

impl NgramModel {
    /// Counts `train` for an `n`-gram model (`n` in 1..=3) over `m` possible tokens.
    pub fn fit(train: &[usize], n: usize, m: usize, eps: [f64; 3]) -> Self {
        assert!(
            (1..=3).contains(&n),
            "n-gram models here have n = 1, 2 or 3"
        );
        let mut model = Self {
            n,
            m,
            eps,
            total: train.len(),
            uni: HashMap::new(),
            bi: HashMap::new(),
            tri: HashMap::new(),
        };
        for &x in train {
            *model.uni.entry(x).or_default() += 1;
        }
        for w in train.windows(2) {
            *model.bi.entry((w[0], w[1])).or_default() += 1;
        }
        for w in train.windows(3) {
            *model.tri.entry((w[0], w[1], w[2])).or_default() += 1;
        }
        model
    }

    pub fn p_unigram(&self, x: usize) -> f64 {
        let n_x = *self.uni.get(&x).unwrap_or(&0) as f64;
        (n_x + self.eps[0] / self.m as f64) / (self.total as f64 + self.eps[0])
    }

    pub fn p_bigram(&self, x: usize, x1: usize) -> f64 {
        let n_xx1 = *self.bi.get(&(x, x1)).unwrap_or(&0) as f64;
        let n_x = *self.uni.get(&x).unwrap_or(&0) as f64;
        (n_xx1 + self.eps[1] * self.p_unigram(x1)) / (n_x + self.eps[1])
    }

    pub fn p_trigram(&self, x: usize, x1: usize, x2: usize) -> f64 {
        let n_3 = *self.tri.get(&(x, x1, x2)).unwrap_or(&0) as f64;
        let n_2 = *self.bi.get(&(x, x1)).unwrap_or(&0) as f64;
        (n_3 + self.eps[2] * self.p_unigram(x2)) / (n_2 + self.eps[2])
    }

    /// `P(tokens[t] | what precedes it)`, backing off to a lower order at the start.
    pub fn prob(&self, tokens: &[usize], t: usize) -> f64 {
        match self.n.min(t + 1) {
            1 => self.p_unigram(tokens[t]),
            2 => self.p_bigram(tokens[t - 1], tokens[t]),
            _ => self.p_trigram(tokens[t - 2], tokens[t - 1], tokens[t]),
        }
    }

    /// `exp(-mean log P)` over `tokens[from..]`, each token conditioned on what precedes it
    /// in `tokens` (so a held-out tail sees the end of the training text as context).
    pub fn perplexity(&self, tokens: &[usize], from: usize) -> f64 {
        let count = tokens.len().saturating_sub(from);
        let nll: f64 = (from..tokens.len())
            .map(|t| -self.prob(tokens, t).ln())
            .sum();
        (nll / count as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplace_formulas_by_hand() {
        // a b a b c over m = 4 tokens (0 unused): n = 5, n(a) = 2, n(a,b) = 2, n(a,b,a) = 1.
        let (a, b, c) = (1, 2, 3);
        let corpus = [a, b, a, b, c];
        let lm = NgramModel::fit(&corpus, 3, 4, [1.0, 2.0, 3.0]);
        let pa = (2.0 + 1.0 / 4.0) / (5.0 + 1.0);
        assert!((lm.p_unigram(a) - pa).abs() < 1e-15);
        let pb = (2.0 + 0.25) / 6.0;
        assert!((lm.p_bigram(a, b) - (2.0 + 2.0 * pb) / (2.0 + 2.0)).abs() < 1e-15);
        assert!((lm.p_trigram(a, b, a) - (1.0 + 3.0 * pa) / (2.0 + 3.0)).abs() < 1e-15);
        // Every distribution sums to one over the m tokens.
        let sum = |f: &dyn Fn(usize) -> f64| (0..4).map(f).sum::<f64>();
        assert!((sum(&|x| lm.p_unigram(x)) - 1.0).abs() < 1e-12);
        assert!((sum(&|x| lm.p_bigram(b, x)) - 1.0).abs() < 1e-12);
        assert!((sum(&|x| lm.p_trigram(a, b, x)) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn epsilon_limits() {
        let corpus = [1, 2, 1, 1, 3];
        let exact = NgramModel::fit(&corpus, 1, 4, [0.0; 3]);
        assert_eq!(exact.p_unigram(1), 3.0 / 5.0);
        assert_eq!(exact.p_unigram(0), 0.0);
        let flat = NgramModel::fit(&corpus, 1, 4, [1e12, 0.0, 0.0]);
        assert!((flat.p_unigram(1) - 0.25).abs() < 1e-9 && (flat.p_unigram(0) - 0.25).abs() < 1e-9);
        // Perplexity of a uniform model is m.
        assert!((flat.perplexity(&corpus, 0) - 4.0).abs() < 1e-6);
    }

    #[test]
    fn counts_by_hand() {
        // a b a b c a b
        let c = count_ngrams(&[1, 2, 1, 2, 3, 1, 2], 2);
        assert_eq!(
            c.counts,
            vec![
                (vec![1, 2], 3),
                (vec![2, 1], 1),
                (vec![2, 3], 1),
                (vec![3, 1], 1)
            ]
        );
        assert_eq!(count_ngrams(&[1, 2], 3).counts, vec![]);
        assert_eq!(c.zipf_points()[0], (1.0, 3.0));
    }
}
