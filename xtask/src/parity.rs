//! `cargo xtask parity`: one training step on a PyTorch fixture's inputs.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use rnnlm_model::parity::{compare, parity};
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Engine, ModelKind};

use crate::backend::DeviceArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Scratch,
    Concise,
}

#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Fixture with the parameters, X, Y and H0.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write logits, loss, H, grad_norm, grad.*, clipped_grad.*, updated.*.
    #[arg(long)]
    pub output: PathBuf,
    /// Model (detected from the tensor names when absent).
    #[arg(long, value_enum)]
    pub model: Option<KindArg>,
    #[arg(long, default_value_t = 1.0)]
    pub theta: f64,
    #[arg(long, default_value_t = 1.0)]
    pub lr: f64,
    /// Compare the output with this expected file and fail on a mismatch.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Absolute tolerance of the comparison (`|a - b| <= atol + rtol * |b|`).
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// How gradients are computed; default: fused on flex and ndarray, autodiff elsewhere.
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
    let kind = args.model.map(|k| match k {
        KindArg::Scratch => ModelKind::Scratch,
        KindArg::Concise => ModelKind::Concise,
    });
    let engine = match args.engine {
        Some(EngineArg::Autodiff) => Engine::Autodiff,
        Some(EngineArg::Fused) => Engine::Fused,
        None if args.device.backend.computes_on_host() => Engine::Fused,
        None => Engine::Autodiff,
    };
    let out = parity(&input, kind, args.theta, args.lr, engine, &device)?;
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
