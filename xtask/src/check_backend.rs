//! `cargo xtask check-backend ndarray|wgpu|tch|cuda`: install what the backend needs,
//! build the CLI with it, and run the parity fixtures and a two-epoch training on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::backend::Backend;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(value_enum)]
    pub backend: Backend,
    /// Skip installing system or Python packages.
    #[arg(long)]
    pub no_install: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let backend = args.backend;
    let Some(feature) = backend.feature() else {
        bail!("flex is checked by `cargo test --release --workspace`");
    };
    let mut env: Vec<(String, String)> = Vec::new();
    match backend {
        Backend::Wgpu if !args.no_install => {
            // A software Vulkan device (llvmpipe) where there is no GPU.
            sh(Command::new("apt-get").args(["install", "-y", "-qq", "mesa-vulkan-drivers"]))?;
        }
        Backend::Tch => {
            if !args.no_install {
                sh(Command::new("python3").args(["-m", "pip", "install", "-q", "torch==2.9.0"]))?;
            }
            env.extend(crate::backend::tch_env()?);
        }
        _ => {}
    }
    let target = root().join("target").join(format!("backend-{feature}"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    sh(Command::new(&cargo)
        .current_dir(root())
        .args(["build", "--release", "-p", "xtask", "--features", feature])
        .arg("--target-dir")
        .arg(&target)
        .envs(env.clone()))?;
    let exe = target.join("release").join("xtask");
    let xtask = |args: &[&str]| -> Result<()> {
        sh(Command::new(&exe)
            .current_dir(root())
            .args(args)
            .args(["--backend", feature])
            .envs(env.clone())
            .env("RNNLM_AUTO_BUILD", "0"))
    };
    let fixtures = root().join("../shared/fixtures");
    let out = std::env::temp_dir().join(format!("rnnlm-check-{feature}"));
    std::fs::create_dir_all(&out)?;
    let dtypes: &[&str] = if backend == Backend::Ndarray {
        &["f32", "f64"]
    } else {
        &["f32"]
    };
    for case in [
        "scratch_small",
        "scratch_small_clip",
        "concise_small",
        "concise_small_clip",
    ] {
        for dtype in dtypes {
            let (atol, rtol) = if *dtype == "f64" {
                ("1e-10", "1e-9")
            } else {
                ("1e-5", "1e-4")
            };
            let expected =
                fixtures.join(format!("{case}.expected.float{}.safetensors", &dtype[1..]));
            let input = fixtures.join(format!("{case}.safetensors"));
            let output = out.join(format!("{case}.{dtype}.safetensors"));
            xtask(&[
                "parity",
                "--input",
                &input.to_string_lossy(),
                "--output",
                &output.to_string_lossy(),
                "--expected",
                &expected.to_string_lossy(),
                "--dtype",
                dtype,
                "--atol",
                atol,
                "--rtol",
                rtol,
            ])?;
        }
    }
    let run = out.join("run");
    let run = run.to_string_lossy();
    xtask(&[
        "train",
        "--config",
        "configs/scratch_sequential.toml",
        "--epochs",
        "2",
        "--out",
        &run,
        "--force",
    ])?;
    xtask(&[
        "generate",
        "--checkpoint",
        &run,
        "--prefix",
        "time traveller",
    ])?;
    println!("{feature}: parity fixtures, two training epochs and generation passed");
    Ok(())
}
