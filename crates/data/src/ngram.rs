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

#[cfg(test)]
mod tests {
    use super::*;

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
