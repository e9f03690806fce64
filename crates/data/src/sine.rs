//! The sine-wave series of book section 8.1 and its autoregressive features.

use rand::{Rng, RngExt};

/// One draw from `N(0, 1)` (Box-Muller), the same on every platform for a seeded rng.
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random()); // u1 in (0, 1]
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `x_t = sin(0.01 t) + N(0, noise_std)` for `t = 1..=T`.
pub fn sine_series(len: usize, noise_std: f64, rng: &mut impl Rng) -> Vec<f64> {
    (1..=len)
        .map(|t| (0.01 * t as f64).sin() + noise_std * standard_normal(rng))
        .collect()
}

/// Embedding of dimension `tau`: row `i` is `[x_i .. x_{i+tau-1}]`, its label `x_{i+tau}`;
/// `len - tau` pairs.
pub fn autoregressive_features(x: &[f64], tau: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = x.len().saturating_sub(tau);
    let features = (0..n).map(|i| x[i..i + tau].to_vec()).collect();
    let labels = x[tau.min(x.len())..].to_vec();
    (features, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noiseless_series_and_features_by_hand() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let x = sine_series(6, 0.0, &mut rng);
        assert_eq!(x[0], 0.01f64.sin());
        assert_eq!(x[5], 0.06f64.sin());
        let (f, y) = autoregressive_features(&x, 4);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1], x[1..5].to_vec());
        assert_eq!(y, vec![x[4], x[5]]);
    }

    #[test]
    fn noise_has_the_requested_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let x = sine_series(20_000, 0.2, &mut rng);
        let resid: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v - (0.01 * (i + 1) as f64).sin())
            .collect();
        let std = (resid.iter().map(|r| r * r).sum::<f64>() / resid.len() as f64).sqrt();
        assert!((std - 0.2).abs() < 0.005, "{std}");
    }
}
