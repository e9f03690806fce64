//! `cargo xtask parity`: one training step on a PyTorch fixture's inputs.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use rnnlm_model::parity::{compare, fixture_spec, parity};
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Engine, fused_applies};

use crate::backend::DeviceArgs;

#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Fixture with the parameters, X, Y, H0 (and C0); the model comes from its metadata
    /// (`fixtures/lm`) or its tensor names (the chapter-8 fixtures).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write logits, loss, H (C), grad_norm, grad.*, clipped_grad.*, updated.*.
    #[arg(long)]
    pub output: PathBuf,
    /// Global-norm clipping threshold [default: the fixture's `theta`, else 1].
    #[arg(long)]
    pub theta: Option<f64>,
    /// SGD learning rate [default: the fixture's `lr`, else 1].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Compare the output with this expected file and fail on a mismatch.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Absolute tolerance of the comparison (`|a - b| <= atol + rtol * |b|`).
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// How gradients are computed; default: fused on flex and ndarray where it applies,
    /// autodiff elsewhere.
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    Autodiff,
    Fused,
}

pub fn run(args: &ParityArgs) -> Result<()> {
    let (device, name) = args.device.device()?;
    let input = NamedTensors::read(&args.input)?;
    let spec = fixture_spec(&input)?;
    let engine = match args.engine {
        Some(EngineArg::Autodiff) => Engine::Autodiff,
        Some(EngineArg::Fused) => Engine::Fused,
        None if args.device.backend.computes_on_host() && fused_applies(&spec.config) => {
            Engine::Fused
        }
        None => Engine::Autodiff,
    };
    let out = parity(&input, args.theta, args.lr, engine, &device)?;
    out.write(&args.output)?;
    let loss: f64 = out.tensors["loss"].iter::<f64>().next().unwrap_or(f64::NAN);
    println!(
        "{}: loss {loss:.6} on {name} ({engine:?} engine); wrote {}",
        args.input.display(),
        args.output.display()
    );
    if let Some(expected) = &args.expected {
        let expected = NamedTensors::read(expected)?;
        match compare(&out, &expected, args.atol, args.rtol)? {
            None => println!(
                "matches {} ({} tensors, atol {}, rtol {})",
                expected.file,
                expected.tensors.len(),
                args.atol,
                args.rtol
            ),
            Some((tensor, i, a, b)) => bail!(
                "mismatch against {}: {tensor}[{i}] = {a}, expected {b}",
                expected.file
            ),
        }
    }
    Ok(())
}
