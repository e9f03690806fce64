//! `cargo xtask check-backend ndarray|wgpu|tch|cuda ...`: install what each backend
//! needs, build the CLI with them all (one build), and for each run the parity fixtures
//! on it and compare it with flex: the same two training epochs (autodiff engine, so the
//! backend's own ops do the work) give the same perplexities to 1e-4, and checkpoints
//! trained on either generate the same text on both.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::backend::{Backend, repository};
use rnnlm_train::RunDir;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The backends to check, built into one binary.
    #[arg(value_enum, required = true)]
    pub backends: Vec<Backend>,
    /// Skip installing system or Python packages.
    #[arg(long)]
    pub no_install: bool,
}

/// Runs `cmd`, echoing it; returns its stdout (also echoed) or fails with its stderr.
fn sh(cmd: &mut Command) -> Result<String> {
    eprintln!("+ {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(stdout)
}

/// The training perplexities of a run's `metrics.csv`.
fn perplexities(run: &Path) -> Result<Vec<f64>> {
    Ok(RunDir::existing(run)?
        .read_metrics()?
        .iter()
        .map(|m| m.perplexity)
        .collect())
}

/// What `backend` needs installed, and the environment its runs need.
fn prepare(backend: Backend, install: bool) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    match backend {
        Backend::Wgpu => {
            let installed = Command::new("dpkg")
                .args(["-s", "mesa-vulkan-drivers"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !installed && install {
                // A software Vulkan device (llvmpipe) where there is no GPU.
                sh(Command::new("apt-get").args(["update", "-qq"]))?;
                sh(Command::new("apt-get").args(["install", "-y", "-qq", "mesa-vulkan-drivers"]))?;
            }
            if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                // Mesa's Vulkan loader warns on every start without one.
                env.push((
                    "XDG_RUNTIME_DIR".into(),
                    std::env::temp_dir().display().to_string(),
                ));
            }
        }
        Backend::Tch => {
            if install {
                sh(Command::new("python3").args(["-m", "pip", "install", "-q", "torch==2.9.0"]))?;
            }
            env.extend(crate::backend::tch_env()?);
        }
        _ => {}
    }
    Ok(env)
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let mut features = Vec::new();
    let mut env = Vec::new();
    for &backend in &args.backends {
        let Some(feature) = backend.feature() else {
            bail!("flex is checked by `cargo test --release --workspace`");
        };
        features.push(feature);
        env.extend(prepare(backend, !args.no_install)?);
    }
    // One build with every feature asked for, unoptimised (Cargo.toml's `backends`
    // profile): from a cold cache 4 minutes for ndarray and wgpu together, where an
    // optimised one took 20 beside the default build (CI's time). The checks' runs are
    // small; flex's side runs on this binary, the optimised default.
    sh(crate::backend::cargo()
        .args([
            "build",
            "--profile",
            "backends",
            "-p",
            "xtask",
            "--features",
        ])
        .arg(features.join(","))
        .envs(env.clone()))?;
    let built = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repository().join("target"), PathBuf::from)
        .join("backends")
        .join("rnnlm");
    let this = std::env::current_exe()?;
    let run_on = |exe: &Path, backend: &str, args: &[String]| -> Result<String> {
        sh(Command::new(exe)
            .current_dir(repository())
            .args(args)
            .args(["--backend", backend])
            .envs(env.clone())
            .env("RNNLM_AUTO_BUILD", "0"))
    };
    for (backend, feature) in args.backends.iter().zip(features) {
        check(
            *backend,
            &|args: &[String]| run_on(&built, feature, args),
            &|args: &[String]| run_on(&this, "flex", args),
        )?;
    }
    Ok(())
}

type Cli<'a> = &'a dyn Fn(&[String]) -> Result<String>;

/// The checks of one backend: `xtask` runs the CLI on it, `flex` on flex. Their files go
/// to `rnnlm-check-<feature>` in the temp directory, removed once every check passed
/// (kept for a look when one fails).
fn check(backend: Backend, xtask: Cli, flex: Cli) -> Result<()> {
    let feature = backend.feature().expect("not flex");
    let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    let fixtures = repository().join("../shared/fixtures");
    let out = std::env::temp_dir().join(format!("rnnlm-check-{feature}"));
    std::fs::create_dir_all(&out)?;
    let dtypes: &[&str] = if backend == Backend::Ndarray {
        &["f32", "f64"]
    } else {
        &["f32"]
    };
    // Every fixture on both engines: the chapter-8 ones and the gated lm ones (LSTM, GRU,
    // embeddings, tied).
    let chapter8 = [
        "scratch_small",
        "scratch_small_clip",
        "concise_small",
        "concise_small_clip",
    ]
    .map(|c| (fixtures.join(c), ["autodiff", "fused"].as_slice()));
    let lm = [
        "lstm_small",
        "lstm_small_tied_clip",
        "gru_small",
        "gru_onehot_clip",
        "rnn_relu_small",
    ]
    .map(|c| {
        (
            fixtures.join("lm").join(c),
            ["autodiff", "fused"].as_slice(),
        )
    });
    for (case, engines) in chapter8.iter().chain(&lm) {
        for dtype in dtypes {
            for engine in *engines {
                let (atol, rtol) = if *dtype == "f64" {
                    ("1e-10", "1e-9")
                } else {
                    ("1e-5", "1e-4")
                };
                let at = |suffix: &str| {
                    let mut p = case.clone().into_os_string();
                    p.push(suffix);
                    PathBuf::from(p)
                };
                let expected = at(&format!(".expected.float{}.safetensors", &dtype[1..]));
                let input = at(".safetensors");
                let name = case.file_name().unwrap_or_default().to_string_lossy();
                let output = out.join(format!("{name}.{dtype}.safetensors"));
                xtask(&strings(&[
                    "parity",
                    "--input",
                    &input.to_string_lossy(),
                    "--output",
                    &output.to_string_lossy(),
                    "--expected",
                    &expected.to_string_lossy(),
                    "--dtype",
                    dtype,
                    "--engine",
                    engine,
                    "--atol",
                    atol,
                    "--rtol",
                    rtol,
                ]))?;
            }
        }
    }

    let (on_backend, on_flex) = (out.join("run"), out.join("run-flex"));
    let train = |run: &Path| {
        let run = run.to_string_lossy();
        strings(&[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--epochs",
            "2",
            "--set",
            "train.engine=\"autodiff\"",
            "--quiet",
            "--out",
            &run,
            "--force",
        ])
    };
    xtask(&train(&on_backend))?;
    flex(&train(&on_flex))?;
    let (a, b) = (perplexities(&on_backend)?, perplexities(&on_flex)?);
    let close = a.len() == 2
        && b.len() == 2
        && a.iter()
            .zip(&b)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs());
    if !close {
        bail!(
            "two epochs give perplexities {a:?} on {feature} but {b:?} on flex (1e-4 apart at most)"
        );
    }
    println!("two epochs: perplexities {a:?} on {feature}, {b:?} on flex");

    // A checkpoint that has learned something (40 fast epochs on flex), so the greedy
    // continuation is more than spaces.
    let trained = out.join("run-flex-40");
    flex(&strings(&[
        "train",
        "--config",
        "configs/scratch_sequential.toml",
        "--epochs",
        "40",
        "--quiet",
        "--out",
        &trained.to_string_lossy(),
        "--force",
    ]))?;
    // Greedy and sampled text from a checkpoint trained on the other backend, both ways.
    let sampled = ["--temperature", "0.8", "--top-k", "5", "--seed", "3"];
    for (run, trained_on) in [(&trained, "flex"), (&on_backend, feature)] {
        for extra in [&[][..], &sampled[..]] {
            let mut generate = strings(&[
                "generate",
                "--checkpoint",
                &run.to_string_lossy(),
                "--prefix",
                "time traveller",
                "--num-preds",
                "100",
            ]);
            generate.extend(strings(extra));
            let (text_here, text_flex) = (xtask(&generate)?, flex(&generate)?);
            if text_here != text_flex {
                bail!(
                    "a checkpoint trained on {trained_on} generates {text_here:?} on {feature} but {text_flex:?} on flex ({extra:?})"
                );
            }
        }
    }
    println!(
        "{feature}: parity fixtures (both engines), two epochs equal to flex's, and the same greedy and sampled text on both from checkpoints trained on either"
    );
    std::fs::remove_dir_all(&out)
        .with_context(|| format!("removing the checks' files in {}", out.display()))?;
    Ok(())
}
