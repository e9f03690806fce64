//! Generation: `predict_ch8` (book 8.5.4) warms up on a prefix, then continues token by
//! token, greedily (the book's argmax) or by sampling with temperature, top-k and top-p.
//! The state is detached after every step, so a long sample runs in constant memory.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rnnlm_data::{EOS, TokenKind, Vocab};

use crate::{Model, ModelError};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// The book's `argmax`.
    Greedy,
    /// Draw from `softmax(logits / temperature)` restricted to the `top_k` most likely
    /// tokens, then to the smallest set of them whose probability reaches `top_p`.
    Sample {
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        seed: u64,
    },
}

impl Decoding {
    pub fn sample(
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::InvalidValue {
                key: "temperature",
                value: temperature.to_string(),
                expected: "a positive number (1.0 samples from the model as is)".into(),
            });
        }
        if top_k == Some(0) {
            return Err(ModelError::InvalidValue {
                key: "top_k",
                value: "0".into(),
                expected: "a positive integer".into(),
            });
        }
        if let Some(p) = top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::InvalidValue {
                key: "top_p",
                value: p.to_string(),
                expected: "a probability in (0, 1]".into(),
            });
        }
        Ok(Self::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        })
    }
}

/// Continues `prefix` (token indices) by up to `num_preds` tokens, calling `emit` with
/// each new token as soon as it is chosen; `emit` returning `false` stops early.
/// Returns prefix + prediction.
pub fn generate(
    model: &Model,
    prefix: &[usize],
    num_preds: usize,
    decoding: &Decoding,
    device: &Device,
    emit: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<usize>, ModelError> {
    let (&last, warm_up) = prefix.split_last().ok_or(ModelError::EmptyPrefix)?;
    // Off the autodiff device: Burn's autodiff keeps what each step records for a
    // backward pass (about 17 KB per token at H = 512, detached state or not), so
    // generation without it is what runs in constant memory.
    let (model, device) = (&model.valid(), &device.clone().without_autodiff());
    let token =
        |i: usize| Tensor::<2, Int>::from_data(TensorData::new(vec![i as i64], [1, 1]), device);
    let mut state = model.begin_state(1, device);
    // Warm-up: feed prefix[..n-1] (outputs ignored); one call is the same as one per token.
    if !warm_up.is_empty() {
        let data: Vec<i64> = warm_up.iter().map(|&i| i as i64).collect();
        let x = Tensor::<2, Int>::from_data(TensorData::new(data, [1, warm_up.len()]), device);
        state = model.forward(x, state).1;
    }
    let mut rng = match decoding {
        Decoding::Sample { seed, .. } => Some(StdRng::seed_from_u64(*seed)),
        Decoding::Greedy => None,
    };
    let mut outputs = prefix.to_vec();
    let mut next = last;
    for _ in 0..num_preds {
        let (logits, new_state) = model.forward(token(next), state);
        state = new_state;
        next = match (decoding, rng.as_mut()) {
            (
                Decoding::Sample {
                    temperature,
                    top_k,
                    top_p,
                    ..
                },
                Some(rng),
            ) => {
                let logits: Vec<f64> = logits.into_data().iter::<f64>().collect();
                sample(&logits, *temperature, *top_k, *top_p, rng.random::<f64>())
            }
            _ => logits.argmax(1).into_scalar::<i64>() as usize,
        };
        outputs.push(next);
        if !emit(next) {
            break;
        }
    }
    Ok(outputs)
}

/// `generate` without streaming.
pub fn predict(
    model: &Model,
    prefix: &[usize],
    num_preds: usize,
    decoding: &Decoding,
    device: &Device,
) -> Result<Vec<usize>, ModelError> {
    generate(model, prefix, num_preds, decoding, device, &mut |_| true)
}

/// The distribution sampling draws from: `(token, probability)` by descending
/// probability, `softmax(logits / temperature)` over the `top_k` largest logits, then cut
/// to the smallest prefix whose probability reaches `top_p`, renormalised.
pub fn sampling_distribution(
    logits: &[f64],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(top_k.unwrap_or(order.len()).clamp(1, order.len()));
    let max = logits[order[0]];
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut dist: Vec<(usize, f64)> = order
        .into_iter()
        .zip(weights.iter().map(|w| w / total))
        .collect();
    if let Some(p) = top_p {
        let mut mass = 0.0;
        let keep = dist
            .iter()
            .position(|&(_, q)| {
                mass += q;
                mass >= p
            })
            .map_or(dist.len(), |i| i + 1);
        dist.truncate(keep);
        let kept: f64 = dist.iter().map(|&(_, q)| q).sum();
        dist.iter_mut().for_each(|(_, q)| *q /= kept);
    }
    dist
}

/// The token of `sampling_distribution` at `u` in `[0, 1)` (inverting its cumulative
/// distribution).
pub fn sample(
    logits: &[f64],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    u: f64,
) -> usize {
    let dist = sampling_distribution(logits, temperature, top_k, top_p);
    let mut target = u;
    for &(i, q) in &dist {
        target -= q;
        if target < 0.0 {
            return i;
        }
    }
    dist.last().expect("logits are not empty").0
}

/// Text tokens of `prefix` at `token` granularity. An empty prefix starts where a line
/// starts: a word model at `<eos>`, a character model at a line break (a space where the
/// vocabulary has no line break, as the book's cleaned text).
pub fn prefix_tokens(prefix: &str, token: TokenKind, vocab: &Vocab) -> Vec<String> {
    let tokens: Vec<String> = match token {
        TokenKind::Char => prefix.chars().map(String::from).collect(),
        TokenKind::Word => prefix.split_whitespace().map(String::from).collect(),
    };
    if !tokens.is_empty() {
        return tokens;
    }
    let start = match token {
        TokenKind::Word => EOS,
        TokenKind::Char if vocab.contains("\n") || !vocab.contains(" ") => "\n",
        TokenKind::Char => " ",
    };
    vec![start.to_string()]
}

/// The tokens of `tokens` the vocabulary lacks, each once, in order of appearance.
pub fn unknown_tokens(tokens: &[String], vocab: &Vocab) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for t in tokens {
        if !vocab.contains(t) && !unknown.contains(t) {
            unknown.push(t.clone());
        }
    }
    unknown
}

/// How a generated token reads as text: characters as they are; words joined by spaces
/// (none at the start of a line), `<eos>` a line break.
pub fn token_text(token: &str, kind: TokenKind, line_start: bool) -> String {
    match kind {
        TokenKind::Char => token.to_string(),
        TokenKind::Word if token == EOS => "\n".to_string(),
        TokenKind::Word if line_start => token.to_string(),
        TokenKind::Word => format!(" {token}"),
    }
}

/// The text of a prediction and the prefix tokens the vocab did not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub text: String,
    pub unknown: Vec<String>,
}

/// `predict_ch8(prefix, num_preds, net, vocab, device)` on text: characters (or words)
/// absent from the vocab become `<unk>` and are reported in `unknown`.
pub fn predict_ch8(
    prefix: &str,
    num_preds: usize,
    model: &Model,
    vocab: &Vocab,
    token: TokenKind,
    decoding: &Decoding,
    device: &Device,
) -> Result<Prediction, ModelError> {
    let tokens = prefix_tokens(prefix, token, vocab);
    let unknown = unknown_tokens(&tokens, vocab);
    let indices: Vec<usize> = tokens.iter().map(|t| vocab.index(t)).collect();
    let out = predict(model, &indices, num_preds, decoding, device)?;
    // The prefix is echoed as given; only the prediction comes from the vocab.
    let mut text = prefix.to_string();
    for t in vocab.to_tokens(&out[indices.len()..]) {
        text.push_str(&token_text(
            t,
            token,
            text.is_empty() || text.ends_with('\n'),
        ));
    }
    Ok(Prediction { text, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_inverts_the_softmax_cdf() {
        // softmax([0, ln 3]) = [0.25, 0.75]; the cdf runs over tokens by descending logit.
        let logits = [0.0, 3f64.ln()];
        assert_eq!(sample(&logits, 1.0, None, None, 0.74), 1);
        assert_eq!(sample(&logits, 1.0, None, None, 0.76), 0);
        assert_eq!(sample(&logits, 1.0, Some(1), None, 0.99), 1);
        // temperature 0.5 squares the odds: [0.1, 0.9]
        assert_eq!(sample(&logits, 0.5, None, None, 0.89), 1);
        assert_eq!(sample(&logits, 0.5, None, None, 0.91), 0);
        // top_p 0.7: the first token alone reaches it.
        assert_eq!(sample(&logits, 1.0, None, Some(0.7), 0.99), 1);
    }

    /// Frequencies of a seeded sampler over many draws against the exact probabilities of
    /// each definition, on a fixed distribution.
    #[test]
    fn temperature_top_k_and_top_p_sample_their_definitions() {
        let probs = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04];
        let logits: Vec<f64> = probs.iter().map(|p: &f64| p.ln() + 1.7).collect();
        let exact = |temperature: f64, top_k: usize, top_p: f64| -> Vec<f64> {
            // p_i^(1/T) over the top k, renormalised; then the smallest prefix reaching top_p.
            let w: Vec<f64> = probs.iter().map(|p| p.powf(1.0 / temperature)).collect();
            let kept: Vec<f64> = w.iter().take(top_k).copied().collect();
            let total: f64 = kept.iter().sum();
            let mut q: Vec<f64> = kept.iter().map(|x| x / total).collect();
            let mut mass = 0.0;
            let n = q
                .iter()
                .position(|x| {
                    mass += x;
                    mass >= top_p
                })
                .map_or(q.len(), |i| i + 1);
            q.truncate(n);
            let total: f64 = q.iter().sum();
            let mut out: Vec<f64> = q.iter().map(|x| x / total).collect();
            out.resize(probs.len(), 0.0);
            out
        };
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 200_000;
        for (temperature, top_k, top_p) in [
            (1.0, 6, 1.0),
            (0.5, 6, 1.0),
            (2.0, 6, 1.0),
            (1.0, 3, 1.0),
            (1.0, 6, 0.8),
            (0.7, 4, 0.9),
        ] {
            let mut counts = [0usize; 6];
            for _ in 0..draws {
                let i = sample(
                    &logits,
                    temperature,
                    Some(top_k),
                    Some(top_p),
                    rng.random::<f64>(),
                );
                counts[i] += 1;
            }
            for (i, (&c, q)) in counts
                .iter()
                .zip(exact(temperature, top_k, top_p))
                .enumerate()
            {
                let f = c as f64 / draws as f64;
                // Five standard deviations of a frequency over 200,000 draws.
                let tol = 5.0 * (q * (1.0 - q) / draws as f64).sqrt() + 1e-12;
                assert!(
                    (f - q).abs() <= tol,
                    "T {temperature} k {top_k} p {top_p}: token {i} drawn {f}, exact {q}"
                );
            }
        }
    }

    #[test]
    fn words_join_with_spaces_and_eos_breaks_lines() {
        let mut text = String::new();
        for t in ["the", "cat", EOS, "sat"] {
            text.push_str(&token_text(
                t,
                TokenKind::Word,
                text.is_empty() || text.ends_with('\n'),
            ));
        }
        assert_eq!(text, "the cat\nsat");
        let lines = Vocab::new(["a", "\n", " "], 0, &[]);
        let book = Vocab::new(["a", " "], 0, &[]);
        assert_eq!(prefix_tokens("", TokenKind::Word, &lines), [EOS]);
        assert_eq!(prefix_tokens("", TokenKind::Char, &lines), ["\n"]);
        assert_eq!(prefix_tokens("", TokenKind::Char, &book), [" "]);
        let tokens = prefix_tokens("Tab T9", TokenKind::Char, &book);
        assert_eq!(unknown_tokens(&tokens, &book), ["T", "b", "9"]);
    }
}
