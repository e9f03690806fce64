//! `predict_ch8` (book 8.5.4): warm up on a prefix, then generate token by token.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rnnlm_data::{TokenKind, Vocab};

use crate::{Model, ModelError};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// The book's `argmax`.
    Greedy,
    /// Draw from `softmax(logits / temperature)`, optionally over the `top_k` largest only.
    Sample {
        temperature: f64,
        top_k: Option<usize>,
        seed: u64,
    },
}

impl Decoding {
    pub fn sample(temperature: f64, top_k: Option<usize>, seed: u64) -> Result<Self, ModelError> {
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
        Ok(Self::Sample {
            temperature,
            top_k,
            seed,
        })
    }
}

/// Continues `prefix` (token indices) by `num_preds` tokens; returns prefix + prediction.
pub fn predict(
    model: &Model,
    prefix: &[usize],
    num_preds: usize,
    decoding: &Decoding,
    device: &Device,
) -> Result<Vec<usize>, ModelError> {
    let (&last, warm_up) = prefix.split_last().ok_or(ModelError::EmptyPrefix)?;
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
                    temperature, top_k, ..
                },
                Some(rng),
            ) => {
                let logits: Vec<f64> = logits.into_data().iter::<f64>().collect();
                sample(&logits, *temperature, *top_k, rng.random::<f64>())
            }
            _ => logits.argmax(1).into_scalar::<i64>() as usize,
        };
        outputs.push(next);
    }
    Ok(outputs)
}

/// Index drawn from `softmax(logits / temperature)` restricted to the `top_k` largest,
/// by inverting the cumulative distribution at `u` in `[0, 1)`.
pub fn sample(logits: &[f64], temperature: f64, top_k: Option<usize>, u: f64) -> usize {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(top_k.unwrap_or(order.len()).min(order.len()));
    let max = logits[order[0]];
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] - max) / temperature).exp())
        .collect();
    let mut target = u * weights.iter().sum::<f64>();
    for (&i, w) in order.iter().zip(&weights) {
        target -= w;
        if target < 0.0 {
            return i;
        }
    }
    *order.last().expect("logits are not empty")
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
    let tokens: Vec<String> = match token {
        TokenKind::Char => prefix.chars().map(String::from).collect(),
        TokenKind::Word => prefix.split_whitespace().map(String::from).collect(),
    };
    let mut unknown: Vec<String> = tokens
        .iter()
        .filter(|t| !vocab.contains(t))
        .cloned()
        .collect();
    unknown.dedup();
    let indices: Vec<usize> = tokens.iter().map(|t| vocab.index(t)).collect();
    let out = predict(model, &indices, num_preds, decoding, device)?;
    // The prefix is echoed as given; only the prediction comes from the vocab.
    let predicted = vocab.to_tokens(&out[indices.len()..]);
    let text = match token {
        TokenKind::Char => format!("{prefix}{}", predicted.concat()),
        TokenKind::Word => tokens
            .iter()
            .map(String::as_str)
            .chain(predicted)
            .collect::<Vec<_>>()
            .join(" "),
    };
    Ok(Prediction { text, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_inverts_the_softmax_cdf() {
        // softmax([0, ln 3]) = [0.25, 0.75]; the cdf runs over tokens by descending logit.
        let logits = [0.0, 3f64.ln()];
        assert_eq!(sample(&logits, 1.0, None, 0.74), 1);
        assert_eq!(sample(&logits, 1.0, None, 0.76), 0);
        assert_eq!(sample(&logits, 1.0, Some(1), 0.99), 1);
        // temperature 0.5 squares the odds: [0.1, 0.9]
        assert_eq!(sample(&logits, 0.5, None, 0.89), 1);
        assert_eq!(sample(&logits, 0.5, None, 0.91), 0);
    }
}
