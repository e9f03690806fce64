//! `cargo xtask bench`: rnnlm's training side by side with PyTorch (the book's code,
//! `bench/pytorch_ch8.py`, or word_language_model's model for `kind = "lm"`,
//! `bench/pytorch_lm.py`), interleaved epoch by epoch so machine noise hits both.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor};
use clap::Args;

use crate::backend::{Backend, DeviceArgs, Dtype};
use rnnlm_model::ModelKind;
use rnnlm_train::{RunOptimizer, TrainConfig, train_epoch};
use serde_json::json;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Experiment config.
    #[arg(long)]
    pub config: PathBuf,
    /// Epochs per side (the first is reported as warm-up and left out of the statistics).
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// CPU threads for both sides.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Also run the book's PyTorch code (needs `python3` with torch).
    #[arg(long)]
    pub against_pytorch: bool,
    /// Python interpreter for the PyTorch side.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Write the numbers as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Vary one size: hidden=128,256,512 (or batch_size=..., num_steps=...).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Config overrides for both sides: --set model.num_hiddens=256.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// rnnlm's backend (the PyTorch side runs on `--pytorch-device`).
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: Backend,
    /// GPU index for wgpu, tch and cuda.
    #[arg(long)]
    pub device: Option<usize>,
    /// Where the PyTorch side trains: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub pytorch_device: String,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long = "set")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Trains one epoch per line read on stdin and prints each epoch's metrics as JSON.
pub fn worker(args: &WorkerArgs) -> Result<()> {
    let (device, _) = args.device.device()?;
    let config = TrainConfig::load(&args.config, &args.set)?;
    let corpus = config.data.load_corpus()?;
    let t = &config.train;
    let engine = config.engine(args.device.backend.computes_on_host());
    let mut model = config
        .model_config(corpus.vocab.len())
        .init(t.seed, &device)?;
    let mut optimizer = RunOptimizer::new(t, engine);
    let never = AtomicBool::new(false);
    let stdin = std::io::stdin();
    for (epoch, line) in stdin.lock().lines().enumerate() {
        line?;
        let (trained, metrics) = train_epoch(
            model,
            &mut optimizer,
            &config,
            t.lr,
            &corpus.indices,
            &device,
            engine,
            epoch,
            Default::default(),
            &never,
            None,
        )?;
        let metrics = metrics.done();
        model = trained;
        println!("{}", serde_json::to_string(&metrics)?);
    }
    Ok(())
}

/// A worker process driven one epoch at a time.
struct Side {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    speeds: Vec<f64>,
}

impl Side {
    fn spawn(name: &'static str, mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the {name} side: {cmd:?}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            name,
            child,
            stdin,
            stdout,
            speeds: Vec::new(),
        })
    }

    /// One epoch; its tokens/s (a field both sides print; rnnlm's line has more).
    fn epoch(&mut self) -> Result<f64> {
        writeln!(self.stdin, "go")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the {} side exited early (see its error above)", self.name);
        }
        let m: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("{} side printed {line:?}", self.name))?;
        let speed = m["tokens_per_sec"]
            .as_f64()
            .with_context(|| format!("{} side printed no tokens_per_sec: {line:?}", self.name))?;
        self.speeds.push(speed);
        Ok(speed)
    }

    /// Peak resident memory (VmHWM) while the process is still alive, in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    fn finish(mut self) -> Result<(Stats, Option<f64>)> {
        let rss = self.peak_rss_mib();
        drop(self.stdin);
        self.child.wait()?;
        Ok((Stats::of(&self.speeds[1.min(self.speeds.len())..]), rss))
    }
}

/// The product rates (FLOP/s) measured after one epoch: `[32, H] x [H, H]` by Burn's
/// matmul and by the host kernel, the decoder's `[rows, H] x [H, V]` by the host kernel.
struct Rates {
    burn: f64,
    kernel: f64,
    decoder: f64,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    p10: f64,
    p90: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        // The median of an even count is the mean of the middle two (the nearest rank
        // took the larger: with two measured epochs, the better one).
        let median = match v.len() {
            n if n > 0 && n.is_multiple_of(2) => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            _ => at(0.5),
        };
        Self {
            median,
            p10: at(0.1),
            p90: at(0.9),
        }
    }
}

/// Multiply-add FLOPs per target token of one training step (forward + backward, ~3x forward),
/// counting the one-hot input product as the book's dense `[V] x [V, G*H]` product (an
/// embedding's as `[E] x [E, G*H]`); a layer above the first adds its `[H] x [H, G*H]`
/// input product; every layer its `[H] x [H, G*H]` recurrent one; the decoder `[H] x [H, V]`.
fn flops_per_token(config: &TrainConfig, vocab: usize) -> f64 {
    let m = &config.model;
    let (h, v) = (m.num_hiddens as f64, vocab as f64);
    let gh = m.cell.gates() as f64 * h;
    let (layers, input) = match m.kind {
        ModelKind::Scratch => (1.0, v),
        _ if m.embedding_dim > 0 => (m.num_layers as f64, m.embedding_dim as f64),
        _ => (m.num_layers as f64, v),
    };
    3.0 * 2.0 * (input * gh + layers * h * gh + (layers - 1.0) * h * gh + h * v)
}

/// Seconds per call of `f` in the fastest of five rounds, after a warm-up.
fn time_per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    let reps = reps.max(10);
    (0..reps / 10).for_each(|_| f());
    // The best of five: what the machine can do. One measurement on two threads read
    // anywhere from 162 to 216 GFLOP/s for the same product, as the second thread did or
    // did not start its share at once.
    (0..5)
        .map(|_| {
            let start = Instant::now();
            (0..reps / 5).for_each(|_| f());
            start.elapsed().as_secs_f64() / (reps / 5) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// FLOP/s of plain `[m, k] x [k, n]` products on `threads` threads, two ways: Burn's
/// matmul on `device` (its own threading), and the host engine's product (the `gemm`
/// crate) with one independent product per thread, the machine's throughput.
fn matmul_flops(m: usize, k: usize, n: usize, threads: usize, device: &Device) -> (f64, f64) {
    use rayon::prelude::*;
    use rnnlm_model::bptt::{Mat, matmul};
    let flops = 2.0 * (m * k * n) as f64;
    // About half a second of products per measurement, whatever their size.
    let reps = ((1e10 / flops) as usize).clamp(10, 200);
    let device = device.clone().without_autodiff();
    let a = Tensor::<2>::ones([m, k], &device);
    let w = Tensor::<2>::ones([k, n], &device).div_scalar(k as f64);
    let burn = flops
        / time_per_call(reps, || {
            let _ = a.clone().matmul(w.clone()).into_data();
        });
    let (a, w) = (vec![1.0f32; m * k], vec![1.0f32 / k as f32; k * n]);
    let mut outs = vec![vec![0.0f32; m * n]; threads];
    let kernel = threads as f64 * flops
        / time_per_call(reps, || {
            outs.par_iter_mut()
                .for_each(|c| matmul(c, Mat::row_major(&a, m, k), Mat::row_major(&w, k, n), false))
        });
    (burn, kernel)
}

fn compare(args: &BenchArgs, overrides: &[String]) -> Result<serde_json::Value> {
    let device_args = DeviceArgs {
        backend: args.backend,
        device: args.device,
        dtype: Some(Dtype::F32),
        threads: Some(args.threads),
    };
    let (device, _) = device_args.device()?;
    let config = TrainConfig::load(&args.config, overrides)?;
    let corpus = config.data.load_corpus()?;
    let exe = std::env::current_exe()?;
    let mut rnnlm = Command::new(exe);
    rnnlm
        .args(["bench-worker", "--config"])
        .arg(&args.config)
        .args(["--threads", &args.threads.to_string()])
        .args(["--backend", &format!("{:?}", args.backend).to_lowercase()]);
    if let Some(index) = args.device {
        rnnlm.args(["--device", &index.to_string()]);
    }
    for o in overrides {
        rnnlm.args(["--set", o]);
    }
    let mut sides = vec![Side::spawn("rnnlm", rnnlm)?];
    if args.against_pytorch {
        let mut py = Command::new(&args.python);
        // The book's models as the book writes them; the language models as
        // word_language_model's RNNModel.
        let script = match config.model.kind {
            ModelKind::Lm => "pytorch_lm.py",
            _ => "pytorch_ch8.py",
        };
        py.arg(crate::backend::repository().join("bench").join(script))
            .arg("--config")
            .arg(&args.config)
            .args(["--worker", "--threads", &args.threads.to_string()])
            .args(["--device", &args.pytorch_device]);
        for o in overrides {
            py.args(["--set", o]);
        }
        sides.push(Side::spawn("pytorch", py)?);
    }
    let per_token = flops_per_token(&config, corpus.vocab.len());
    let h = config.model.num_hiddens;
    // The decoder's product over a minibatch, split across the threads as the engine does.
    let (t, b, v) = (
        config.train.num_steps,
        config.train.batch_size,
        corpus.vocab.len(),
    );
    let rows = (t * b).div_ceil(args.threads);
    // The machine's product rates measured after every epoch of both sides, so that each
    // epoch's training rate is set against what the machine did just then: this host's
    // rate for one product moved 95-150 GFLOP/s between runs (its L3 is shared), and one
    // measurement at the end made the training's share anything from 48% to 93%.
    let mut rates = Vec::new();
    for _ in 0..args.epochs {
        for side in sides.iter_mut() {
            side.epoch()?;
        }
        let (burn, kernel) = matmul_flops(32, h, h, args.threads, &device);
        let (_, decoder) = matmul_flops(rows, h, v, args.threads, &device);
        rates.push(Rates {
            burn,
            kernel,
            decoder,
        });
    }
    let rnnlm_speeds = sides[0].speeds.clone();
    let mut results = Vec::new();
    for side in sides {
        let name = side.name;
        let (stats, rss) = side.finish()?;
        results.push((name, stats, rss));
    }
    // Warm-up left out, as in the tokens/s.
    let (rates, speeds) = (&rates[1..], &rnnlm_speeds[1..]);
    let median = |f: &dyn Fn(&Rates) -> f64| Stats::of(&rates.iter().map(f).collect::<Vec<_>>());
    let (burn_peak, kernel_peak, decoder_peak) = (
        median(&|r| r.burn),
        median(&|r| r.kernel),
        median(&|r| r.decoder),
    );
    // Each epoch's training FLOP/s over the rate measured right after it.
    let share = |rate: &dyn Fn(&Rates) -> f64| {
        let shares: Vec<f64> = (speeds.iter().zip(rates))
            .map(|(s, r)| s * per_token / rate(r))
            .collect();
        Stats::of(&shares)
    };
    let (peak_share, decoder_share) = (share(&|r| r.burn.max(r.kernel)), share(&|r| r.decoder));
    println!(
        "\n{} (H={}, B={}, T={}), {} epochs, {} thread(s), rnnlm on {:?}, PyTorch on {}; first epoch left out",
        args.config.display(),
        config.model.num_hiddens,
        config.train.batch_size,
        config.train.num_steps,
        args.epochs,
        args.threads,
        args.backend,
        args.pytorch_device
    );
    println!("| side | median tokens/s | p10 | p90 | peak RSS MiB | training GFLOP/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut out = json!({"config": args.config, "overrides": overrides, "epochs": args.epochs, "threads": args.threads,
        "backend": format!("{:?}", args.backend).to_lowercase(), "pytorch_device": args.pytorch_device,
        "flops_per_token": per_token,
        "matmul_flops_burn": burn_peak.median, "matmul_flops_kernel": kernel_peak.median, "decoder_flops": decoder_peak.median,
        "peak_share": peak_share.median, "decoder_share": decoder_share.median,
        "rates": rates.iter().map(|r| json!({"burn": r.burn, "kernel": r.kernel, "decoder": r.decoder})).collect::<Vec<_>>()});
    for (name, s, rss) in &results {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {} | {:.1} |",
            s.median,
            s.p10,
            s.p90,
            rss.map_or("?".into(), |r| format!("{r:.0}")),
            s.median * per_token / 1e9
        );
        out[name] = json!({"median": s.median, "p10": s.p10, "p90": s.p90, "peak_rss_mib": rss});
    }
    if let [(_, a, ra), (_, b, rb)] = &results[..] {
        let rss_ratio = ra.zip(*rb).map(|(x, y)| x / y);
        println!(
            "rnnlm / pytorch: {:.2}x tokens/s, {} peak RSS",
            a.median / b.median,
            rss_ratio.map_or("?".into(), |r| format!("{r:.2}x"))
        );
        out["ratio"] = json!(a.median / b.median);
        out["rss_ratio"] = json!(rss_ratio);
    }
    let gflops = |s: Stats| {
        format!(
            "{:.1} ({:.1}-{:.1})",
            s.median / 1e9,
            s.p10 / 1e9,
            s.p90 / 1e9
        )
    };
    let percent = |s: Stats| {
        format!(
            "{:.0}% ({:.0}-{:.0}%)",
            100.0 * s.median,
            100.0 * s.p10,
            100.0 * s.p90
        )
    };
    println!(
        "products measured after each epoch, medians (p10-p90) over the epochs, {} thread(s):",
        args.threads
    );
    println!(
        "  machine peak [32,{h}]x[{h},{h}]: Burn matmul {}, host kernel {} GFLOP/s; rnnlm training reaches {} of the better",
        gflops(burn_peak),
        gflops(kernel_peak),
        percent(peak_share),
    );
    println!(
        "  decoder product [{rows},{h}]x[{h},{v}] per thread: {} GFLOP/s (host kernel); rnnlm training reaches {} of it",
        gflops(decoder_peak),
        percent(decoder_share),
    );
    Ok(out)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.epochs < 2 {
        bail!(
            "--epochs {}: give at least 2 (the first epoch of each side is warm-up, left out of the statistics)",
            args.epochs
        );
    }
    let mut all = Vec::new();
    match &args.sweep {
        None => all.push(compare(args, &args.set)?),
        Some(sweep) => {
            let (key, values) = sweep
                .split_once('=')
                .context("--sweep takes key=v1,v2,...")?;
            let key = match key {
                "hidden" | "num_hiddens" => "model.num_hiddens",
                "batch_size" => "train.batch_size",
                "num_steps" => "train.num_steps",
                other => bail!("--sweep {other}: expected hidden, batch_size or num_steps"),
            };
            for value in values.split(',') {
                let mut overrides = args.set.clone();
                overrides.push(format!("{key}={value}"));
                all.push(compare(args, &overrides)?);
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}
