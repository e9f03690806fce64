//! End to end through the `xtask` binary, as users run it: parity against PyTorch
//! fixtures (f32 and f64 in separate processes), the corpus report, training,
//! resume after `kill -9`, generation, and clear errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared() -> PathBuf {
    root().join("../shared")
}

fn xtask(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rnnlm"));
    cmd.args(args)
        .current_dir(root())
        .env("RNNLM_DATA_DIR", shared().join("datasets"))
        .env("RNNLM_CACHE_DIR", "/nonexistent/rnnlm-cache") // never download in tests
        .env_remove("RNNLM_AUTO_BUILD"); // never build another backend in tests
    cmd
}

fn run_xtask(args: &[&str]) -> Output {
    xtask(args).output().expect("xtask runs")
}

fn ok(args: &[&str]) -> String {
    let out = run_xtask(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with the error text; asserts it contains every `needle`.
fn fails(args: &[&str], needles: &[&str]) {
    let out = run_xtask(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail cleanly:\n{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in:\n{err}");
    }
}

/// A test's scratch directory, removed when the test passes and kept when it fails (for
/// a look at what the run left).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tmp(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("rnnlm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const CASES: [&str; 4] = [
    "scratch_small",
    "scratch_small_clip",
    "concise_small",
    "concise_small_clip",
];

#[test]
fn parity_matches_the_shared_pytorch_fixtures_in_f32_and_f64() {
    let dir = tmp("parity");
    let fixtures = shared().join("fixtures");
    for case in CASES {
        let input = fixtures.join(format!("{case}.safetensors"));
        let runs = [("f32", "1e-5", "1e-4"), ("f64", "1e-10", "1e-9")]
            .map(|run| [(run, "autodiff"), (run, "fused")]);
        for ((dtype, atol, rtol), engine) in runs.into_iter().flatten() {
            let expected =
                fixtures.join(format!("{case}.expected.float{}.safetensors", &dtype[1..]));
            let output = dir.join(format!("{case}.{dtype}.safetensors"));
            let out = ok(&[
                "parity",
                "--input",
                s(&input),
                "--output",
                s(&output),
                "--dtype",
                dtype,
                "--engine",
                engine,
                "--expected",
                s(&expected),
                "--atol",
                atol,
                "--rtol",
                rtol,
            ]);
            assert!(out.contains("matches"), "{out}");
            assert!(
                out.to_lowercase().contains(&format!("{engine} engine")),
                "{out}"
            );
        }
    }
    // The check can fail: a different learning rate is a mismatch that names the tensor.
    let input = fixtures.join("scratch_small.safetensors");
    let expected = fixtures.join("scratch_small.expected.float32.safetensors");
    fails(
        &[
            "parity",
            "--input",
            s(&input),
            "--output",
            s(&dir.join("x")),
            "--lr",
            "0.5",
            "--expected",
            s(&expected),
        ],
        &["mismatch", "updated."],
    );
}

#[test]
fn parity_matches_the_lm_fixtures_in_f32_and_f64() {
    // LSTM, GRU and relu language models: embeddings, one-hot input, two layers, a tied
    // decoder; the model, theta and lr come from each fixture's metadata.
    let dir = tmp("lm-parity");
    let lm = shared().join("fixtures/lm");
    let mut cases: Vec<String> = std::fs::read_dir(&lm)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_suffix(".safetensors")?;
            (!case.contains(".expected")).then(|| case.to_string())
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "{cases:?}");
    let runs = [("f32", "1e-5", "1e-4"), ("f64", "1e-10", "1e-9")]
        .map(|run| [(run, "autodiff"), (run, "fused")]);
    for case in &cases {
        for ((dtype, atol, rtol), engine) in runs.into_iter().flatten() {
            let expected = lm.join(format!("{case}.expected.float{}.safetensors", &dtype[1..]));
            let out = ok(&[
                "parity",
                "--input",
                s(&lm.join(format!("{case}.safetensors"))),
                "--output",
                s(&dir.join(format!("{case}.{dtype}.safetensors"))),
                "--dtype",
                dtype,
                "--engine",
                engine,
                "--expected",
                s(&expected),
                "--atol",
                atol,
                "--rtol",
                rtol,
            ]);
            assert!(out.contains("matches"), "{case} {dtype} {engine}: {out}");
        }
    }
}

#[test]
fn parity_holds_at_the_book_sizes() {
    // Fixtures made by tools/pytorch/make_book_fixtures.py with the book's PyTorch code.
    let dir = tmp("book-parity");
    let fixtures = root().join("tests/fixtures");
    for model in ["scratch", "concise"] {
        let input = fixtures.join(format!("book_{model}.safetensors"));
        let runs = [("1", ""), ("0.01", ".clip")].map(|run| [(run, "autodiff"), (run, "fused")]);
        for ((theta, suffix), engine) in runs.into_iter().flatten() {
            let expected = fixtures.join(format!("book_{model}.expected{suffix}.safetensors"));
            let out = ok(&[
                "parity",
                "--input",
                s(&input),
                "--output",
                s(&dir.join("out.safetensors")),
                "--theta",
                theta,
                "--engine",
                engine,
                "--expected",
                s(&expected),
            ]);
            assert!(out.contains("matches"), "{out}");
        }
    }
}

#[test]
fn parity_rejects_bad_fixtures() {
    let dir = tmp("bad-fixture");
    let missing = dir.join("missing.safetensors");
    fails(
        &[
            "parity",
            "--input",
            s(&missing),
            "--output",
            s(&dir.join("o")),
        ],
        &["missing.safetensors"],
    );
    let expected = shared().join("fixtures/scratch_small.expected.float32.safetensors");
    // An expected-output file has no parameters: the error says what was looked for.
    fails(
        &[
            "parity",
            "--input",
            s(&expected),
            "--output",
            s(&dir.join("o")),
        ],
        &["W_xh (scratch model) or weight_ih_l0"],
    );
}

#[test]
fn corpus_report_json_as_the_book_prints() {
    let out = ok(&[
        "corpus",
        "--dataset",
        "time-machine",
        "--token",
        "char",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["vocab_size"], 28);
    assert_eq!(v["corpus_len"], 170_580);
    assert_eq!(v["idx_to_token"][1], " ");
    assert_eq!(v["corpus_head"].as_array().unwrap().len(), 20);
    let dir = tmp("zipf");
    let plot = dir.join("zipf.svg");
    let out = ok(&[
        "corpus",
        "--token",
        "word",
        "--ngrams",
        "3",
        "--zipf-plot",
        s(&plot),
    ]);
    assert!(out.contains("\"the time traveller\" 59"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&plot)
            .unwrap()
            .matches("<polyline")
            .count(),
        3
    );
    fails(
        &["corpus", "--dataset", "war-and-peace"],
        &[
            "war-and-peace",
            "jaychou-lyrics, ptb, time-machine, tinyshakespeare",
        ],
    );
}

#[test]
fn scratch_sequential_learns_and_generates() {
    let dir = tmp("train");
    let run = dir.join("run");
    let out = ok(&[
        "train",
        "--config",
        "configs/scratch_sequential.toml",
        "--epochs",
        "60",
        "--out",
        s(&run),
        "--set",
        "train.predict_every=30",
    ]);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = metrics.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,step,perplexity,valid_perplexity,lr,tokens_per_sec,seconds")
    );
    let ppl: Vec<f64> = lines
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ppl.len(), 60);
    // A uniform guess over 28 characters has perplexity 28; the book's run is near 10 by epoch 60.
    assert!(
        ppl[0] > 15.0 && ppl[59] < 10.0,
        "perplexity went {} -> {}",
        ppl[0],
        ppl[59]
    );
    // flex computes on the host, so the CLI picks the fused engine for it.
    assert!(
        out.contains("tokens/sec on flex (cpu), fused engine"),
        "{out}"
    );
    assert!(run.join("perplexity.svg").exists() && run.join("log.txt").exists());

    let text = ok(&[
        "generate",
        "--checkpoint",
        s(&run),
        "--prefix",
        "time traveller",
    ]);
    assert!(
        text.starts_with("time traveller") && text.trim_end().chars().count() == 14 + 50,
        "{text}"
    );
    let sample = [
        "generate",
        "--checkpoint",
        s(&run),
        "--prefix",
        "the",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--seed",
        "3",
    ];
    assert_eq!(ok(&sample), ok(&sample), "a sampling seed repeats");
    let out = run_xtask(&["generate", "--checkpoint", s(&run), "--prefix", "Time 9"]);
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("read as <unk>: [\"T\", \"9\"]"),
        "{warning}"
    );

    // An existing run is never silently overwritten.
    fails(
        &[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--out",
            s(&run),
        ],
        &["already exists", "--resume", "--force"],
    );
    fails(
        &[
            "generate",
            "--checkpoint",
            s(&dir.join("nope")),
            "--prefix",
            "a",
        ],
        &["nope"],
    );
    // Commands that read a run never write into a directory that is not one.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    for cmd in [
        vec!["generate", "--checkpoint", s(&plain), "--prefix", "a"],
        vec!["eval", "--checkpoint", s(&plain)],
        vec![
            "bptt-report",
            "--checkpoint",
            s(&plain),
            "--out",
            s(&plain.join("x.svg")),
        ],
        vec![
            "export",
            "--checkpoint",
            s(&plain),
            "--out",
            s(&plain.join("x.safetensors")),
        ],
    ] {
        fails(&cmd, &["is not a run directory", "config.toml"]);
    }
    assert!(
        std::fs::read_dir(&plain).unwrap().next().is_none(),
        "{plain:?} was written"
    );
    // An empty prefix starts at a line start (a space in the book's cleaned text).
    let text = ok(&["generate", "--checkpoint", s(&run), "--num-preds", "20"]);
    assert_eq!(text.trim_end_matches('\n').chars().count(), 20, "{text:?}");
    // Several samples, each streamed after the prefix.
    let many = ok(&[
        "generate",
        "--checkpoint",
        s(&run),
        "--prefix",
        "time",
        "--top-p",
        "0.9",
        "--num-samples",
        "3",
    ]);
    assert!(many.matches("time").count() >= 3, "{many}");
    assert_eq!(many.matches("\n---\n").count(), 2, "{many}");
}

fn perplexities(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().to_string())
        .collect()
}

/// The metrics rows without their timings (tokens/s and seconds differ from run to run).
fn metric_rows(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
        .collect()
}

/// Trains `common` once uninterrupted, then kills the same run with SIGKILL at several
/// moments, resumes it, and requires the same metrics as the uninterrupted run.
fn resume_equals_uninterrupted(name: &str, common: &[&str], prefix: &str) {
    let dir = tmp(name);
    let full = dir.join("full");
    let started = Instant::now();
    ok(&[&["train", "--out", s(&full)], common].concat());
    // Kill at fractions of the uninterrupted run's time, so the moments fall between
    // checkpoints however fast the machine (or however busy with other tests).
    let total_ms = started.elapsed().as_millis() as u64;

    let mut resumed = 0;
    for kill_after_ms in [30, 50, 70, 90].map(|percent| total_ms * percent / 100) {
        let part = dir.join(format!("part-{kill_after_ms}"));
        let mut child = xtask(&[&["train", "--out", s(&part)], common].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(kill_after_ms)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !part.join("checkpoints/LATEST").exists() {
            continue; // killed before the first checkpoint: nothing to resume
        }
        // Whatever moment the kill hit, the last checkpoint loads and the run finishes as if never stopped.
        ok(&[
            "generate",
            "--checkpoint",
            s(&part),
            "--prefix",
            prefix,
            "--num-preds",
            "5",
        ]);
        ok(&["train", "--resume", s(&part), "--quiet"]);
        assert_eq!(
            metric_rows(&part),
            metric_rows(&full),
            "{name}: killed after {kill_after_ms} ms"
        );
        resumed += 1;
    }
    assert!(
        resumed >= 2,
        "{name}: only {resumed} kills landed after a checkpoint"
    );
}

#[test]
fn resume_after_kill_9_equals_an_uninterrupted_run() {
    // Adam carries optimizer state, so resuming must restore it too.
    let common = [
        "--config",
        "configs/jaychou_concise.toml",
        "--epochs",
        "8",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "model.num_hiddens=64",
        "--quiet",
    ];
    resume_equals_uninterrupted("resume", &common, "分开");
}

#[test]
fn resume_of_an_lstm_with_dropout_schedule_and_validation_equals_an_uninterrupted_run() {
    // Dropout masks, RMSprop state, the plateau schedule's rate, the best model so far and
    // mid-epoch validation rows must all come back exactly.
    let common = [
        "--config",
        "configs/shakespeare_char.toml",
        "--epochs",
        "8",
        "--set",
        "data.max_tokens=20000",
        "--set",
        "model.num_hiddens=32",
        "--set",
        "model.embedding_dim=16",
        "--set",
        "model.dropout=0.3",
        "--set",
        "train.batch_size=10",
        "--set",
        "train.num_steps=20",
        "--set",
        "train.schedule=\"plateau\"",
        "--set",
        "train.eval_every=40",
        "--set",
        "train.predict_every=100",
        "--set",
        "train.checkpoint_every=1",
        "--quiet",
    ];
    resume_equals_uninterrupted("resume-lstm", &common, "ROMEO");
}

#[test]
fn divergence_stops_the_run_with_advice() {
    let dir = tmp("diverge");
    fails(
        &[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--epochs",
            "3",
            "--out",
            s(&dir.join("r")),
            "--set",
            "model.num_hiddens=16",
            "--set",
            "train.lr=1e6",
            "--set",
            "train.theta=1e6",
        ],
        &["training diverged", "lower train.lr"],
    );
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = tmp("configs");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let unknown = write("unknown.toml", "[train]\nlearnig_rate = 0.1\n");
    fails(
        &["train", "--config", s(&unknown)],
        &["unknown.toml", "learnig_rate"],
    );
    let wrong = write("wrong.toml", "[model]\nnum_hiddens = \"big\"\n");
    fails(
        &["train", "--config", s(&wrong)],
        &["wrong.toml", "num_hiddens"],
    );
    let cfg = "configs/scratch_sequential.toml";
    fails(
        &["train", "--config", cfg, "--set", "train.lr=-1"],
        &["train.lr = -1", "with train.lr=-1"],
    );
    fails(
        &["train", "--config", cfg, "--set", "train.num_steps=0"],
        &["train.num_steps = 0"],
    );
    fails(
        &[
            "train",
            "--config",
            cfg,
            "--set",
            "train.batch_size=400",
            "--out",
            s(&dir.join("r")),
        ],
        &["batch_size", "10000"],
    );
    fails(
        &["train", "--config", s(&dir.join("absent.toml"))],
        &["absent.toml"],
    );
    fails(
        &["train", "--config", cfg, "--backend", "wgpu"],
        &["--features wgpu"],
    );
    fails(&["train", "--resume", s(&dir.join("never"))], &["never"]);
}

#[test]
fn word_level_and_lyrics_runs_work() {
    let dir = tmp("word");
    let run = dir.join("w");
    ok(&[
        "train",
        "--config",
        "configs/scratch_sequential.toml",
        "--epochs",
        "2",
        "--out",
        s(&run),
        "--quiet",
        "--set",
        "data.token=word",
        "--set",
        "model.num_hiddens=32",
        "--set",
        "train.num_steps=5",
        "--set",
        "train.prefixes=[\"the time\"]",
    ]);
    let text = ok(&[
        "generate",
        "--checkpoint",
        s(&run),
        "--prefix",
        "the time traveller",
        "--num-preds",
        "4",
    ]);
    assert_eq!(text.split_whitespace().count(), 7, "{text}");
    let lyrics = dir.join("j");
    let out = ok(&[
        "train",
        "--config",
        "configs/jaychou_scratch_random.toml",
        "--epochs",
        "2",
        "--out",
        s(&lyrics),
        "--set",
        "train.predict_every=1",
        "--set",
        "model.num_hiddens=32",
    ]);
    assert!(
        out.contains(" - 分开") && out.contains(" - 不分开"),
        "{out}"
    );
}

#[test]
fn ctrl_c_checkpoints_within_the_epoch_and_the_resumed_run_equals_an_uninterrupted_one() {
    // An LSTM with dropout whose state is carried across minibatches (saved with the
    // checkpoint), validation within epochs, a plateau schedule and Adam on the host
    // engine (its moments in the checkpoint): all must continue exactly from the
    // minibatch where Ctrl-C stopped it.
    let dir = tmp("sigint");
    let common = [
        "--config",
        "configs/shakespeare_char.toml",
        "--epochs",
        "3",
        "--set",
        "data.max_tokens=30000",
        "--set",
        "model.num_hiddens=32",
        "--set",
        "model.dropout=0.3",
        "--set",
        "train.batch_size=10",
        "--set",
        "train.num_steps=20",
        "--set",
        "train.sampler=\"sequential\"",
        "--set",
        "train.state=\"carry\"",
        "--set",
        "train.schedule=\"plateau\"",
        "--set",
        "train.eval_every=50",
        "--set",
        "train.optimizer=\"adam\"",
        "--quiet",
    ];
    let full = dir.join("full");
    let started = Instant::now();
    ok(&[&["train", "--out", s(&full)], &common[..]].concat());
    let total = started.elapsed();
    let run = dir.join("r");
    let child = xtask(&[&["train", "--out", s(&run)], &common[..]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(total / 2);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("checkpoint saved"), "{stdout}");
    let latest = std::fs::read_to_string(run.join("checkpoints/LATEST")).unwrap();
    assert!(
        latest.matches('-').count() == 2,
        "not a checkpoint within an epoch: {latest}"
    );
    let host_state = run.join("checkpoints").join(latest.trim());
    assert!(host_state.join("optim-host.safetensors").exists());
    ok(&["generate", "--checkpoint", s(&run), "--prefix", "ROMEO"]);
    ok(&["train", "--resume", s(&run), "--quiet"]);
    assert_eq!(metric_rows(&run), metric_rows(&full));
}

#[test]
fn a_diverging_run_stops_with_advice_and_keeps_its_checkpoint() {
    let dir = tmp("nan");
    let run = dir.join("r");
    fails(
        &[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--out",
            s(&run),
            "--epochs",
            "50",
            "--set",
            "model.num_hiddens=32",
            "--set",
            "train.checkpoint_every=1",
            "--set",
            "train.theta=1e30",
            "--set",
            "train.lr=1e300",
            "--quiet",
        ],
        &["training diverged", "lower train.lr", "minibatch"],
    );
    // Nothing half-written: whatever checkpoint exists still generates.
    if run.join("checkpoints/LATEST").exists() {
        ok(&["generate", "--checkpoint", s(&run), "--prefix", "time"]);
    }
}

#[test]
fn ngram_baseline_and_held_out_rnn_on_the_same_split() {
    let out = ok(&["ngram", "--n", "3", "--token", "word", "--max-tokens", "0"]);
    assert!(out.contains("\"the time traveller\" 59"), "{out}");
    let out = ok(&["ngram", "--n", "1", "--eps", "1e12,0,0"]);
    // A unigram model smoothed towards uniform has perplexity close to the vocab size, 28.
    let ppl: f64 = out
        .split("perplexity ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((ppl - 28.0).abs() < 1e-3, "{out}");
    fails(&["ngram", "--n", "4"], &["--n 4"]);
}

#[test]
fn splits_validation_best_model_test_score_and_eval_agree() {
    let dir = tmp("splits");
    let run = dir.join("r");
    // Tiny Shakespeare is shipped: no mirror needed. An LSTM with an embedding, dropout,
    // a plateau schedule and mid-epoch validation.
    let out = ok(&[
        "train",
        "--config",
        "configs/shakespeare_char.toml",
        "--epochs",
        "2",
        "--out",
        s(&run),
        "--data-dir",
        "/nonexistent-mirror",
        "--set",
        "data.max_tokens=30000",
        "--set",
        "data.test_fraction=0.1",
        "--set",
        "model.num_hiddens=16",
        "--set",
        "model.embedding_dim=8",
        "--set",
        "model.dropout=0.2",
        "--set",
        "train.schedule=\"plateau\"",
        "--set",
        "train.eval_every=4",
        "--set",
        "train.prefixes=[\"ROMEO:\"]",
        "--quiet",
    ]);
    assert!(out.contains("test perplexity"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for key in [
        "epochs_completed",
        "train_perplexity",
        "valid_perplexity",
        "best_valid_perplexity",
        "best_epoch",
        "test_perplexity",
        "tokens_per_sec",
        "parameters",
        "wall_seconds",
    ] {
        assert!(!summary[key].is_null(), "{key} in {summary}");
    }
    assert_eq!(summary["epochs_completed"], 2);
    assert!(run.join("best/model.bpk").exists());
    // Mid-epoch validation rows (eval_every) and one row per epoch end, all with a valid column.
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().skip(1).collect();
    assert!(rows.len() > 2, "{metrics}");
    assert!(
        rows.iter()
            .all(|r| !r.split(',').nth(3).unwrap().is_empty()),
        "{metrics}"
    );
    // eval prints what the run reported, for the test and the validation split.
    // `plot` draws its training and validation curves.
    let svg = dir.join("curves.svg");
    ok(&["plot", s(&run), "--nats", "--out", s(&svg)]);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    assert!(svg.contains("r train") && svg.contains("r valid") && svg.contains("nats"));
    // `runs` lists it with its best validation and test perplexity.
    let table = ok(&["runs", s(&dir)]);
    let line = table.lines().find(|l| l.starts_with("| r |")).unwrap();
    let best = summary["best_valid_perplexity"].as_f64().unwrap();
    assert!(line.contains(&format!("{best:.2} (")), "{table}");
    assert!(line.contains("2 / 2") && line.contains("lstm"), "{table}");
    let test = summary["test_perplexity"].as_f64().unwrap();
    let eval = ok(&["eval", "--checkpoint", s(&run), "--split", "test"]);
    assert!(
        eval.contains(&format!("test perplexity {test:.3}")),
        "{eval} vs {test}"
    );
    let best = summary["best_valid_perplexity"].as_f64().unwrap();
    let eval = ok(&["eval", "--checkpoint", s(&run), "--split", "valid"]);
    assert!(
        eval.contains(&format!("valid perplexity {best:.3}")),
        "{eval} vs {best}"
    );
    // One stream instead of eval_batch_size rows: the same text, fewer fresh starts.
    let one = ok(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--split",
        "valid",
        "--rows",
        "1",
    ]);
    assert!(
        one.contains("1 row)") && !one.contains(&format!("{best:.3}")),
        "{one}"
    );
    // A corpus whose splits are too small for one minibatch is refused before anything is written.
    let small = dir.join("small");
    fails(
        &[
            "train",
            "--config",
            "configs/shakespeare_char.toml",
            "--out",
            s(&small),
            "--set",
            "data.max_tokens=2000",
        ],
        &["training split has", "train.batch_size"],
    );
    assert!(!small.exists());
    fails(
        &[
            "train",
            "--config",
            "configs/shakespeare_char.toml",
            "--out",
            s(&small),
            "--set",
            "data.valid_fraction=0.6",
            "--set",
            "data.test_fraction=0.4",
        ],
        &["must sum to less than 1"],
    );
    assert!(!small.exists());
}

#[test]
fn seqmodel_prints_the_books_lines_and_figures() {
    let dir = tmp("sine");
    let out = ok(&[
        "seqmodel",
        "--config",
        "configs/sine_mlp.toml",
        "--out",
        s(&dir),
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("epoch ")).count(),
        5,
        "{out}"
    );
    assert!(
        out.contains("64-step-ahead prediction: mean squared error"),
        "{out}"
    );
    assert!(dir.join("predictions.svg").exists() && dir.join("kstep.svg").exists());
}

#[test]
fn truncation_strategies_train_and_the_bptt_report_plots() {
    let dir = tmp("bptt");
    for strategy in ["regular", "randomized", "full"] {
        let run = dir.join(strategy);
        ok(&[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--epochs",
            "2",
            "--out",
            s(&run),
            "--quiet",
            "--set",
            "model.num_hiddens=32",
            "--set",
            &format!("train.truncation=\"{strategy}\""),
        ]);
        let epochs = perplexities(&run);
        assert_eq!(epochs.len(), 2, "{strategy}");
    }
    let out = ok(&["bptt-report", "--checkpoint", s(&dir.join("regular"))]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        4,
        "{out}"
    );
    let svg = std::fs::read_to_string(dir.join("regular/bptt.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 4);
    fails(
        &[
            "train",
            "--config",
            "configs/scratch_sequential.toml",
            "--set",
            "train.truncation_pi=0",
        ],
        &["truncation_pi"],
    );
}

/// One epoch of a tiny tied LSTM with an embedding on the shipped tiny Shakespeare.
fn train_tiny_tied_lstm(run: &Path) {
    ok(&[
        "train",
        "--config",
        "configs/shakespeare_char.toml",
        "--epochs",
        "1",
        "--out",
        s(run),
        "--set",
        "data.max_tokens=20000",
        "--set",
        "model.num_hiddens=16",
        "--set",
        "model.embedding_dim=16",
        "--set",
        "model.tied=true",
        "--set",
        "train.batch_size=10",
        "--set",
        "train.num_steps=10",
        "--quiet",
    ]);
}

#[test]
fn export_then_import_gives_a_run_that_generates_the_same_text() {
    let dir = tmp("interchange");
    let run = dir.join("run");
    train_tiny_tied_lstm(&run);
    let file = dir.join("model.safetensors");
    ok(&["export", "--checkpoint", s(&run), "--out", s(&file)]);
    let imported = dir.join("imported");
    // The export carries its vocabulary and model config: no --vocab needed.
    ok(&["import", "--safetensors", s(&file), "--out", s(&imported)]);
    let generate = |r: &Path| {
        ok(&[
            "generate",
            "--checkpoint",
            s(r),
            "--prefix",
            "KING",
            "--num-preds",
            "40",
        ])
    };
    assert_eq!(generate(&run), generate(&imported));
    // A vocabulary of the wrong size, and a file without one, are clear errors; nothing is made.
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, "<unk>\na\nb\n").unwrap();
    let lm = shared().join("fixtures/lm/gru_small.safetensors");
    let nothing = dir.join("nothing");
    fails(
        &["import", "--safetensors", s(&lm), "--out", s(&nothing)],
        &["carries no vocabulary", "--vocab"],
    );
    fails(
        &[
            "import",
            "--safetensors",
            s(&lm),
            "--vocab",
            s(&vocab),
            "--out",
            s(&nothing),
        ],
        &["the model has 11 tokens, the vocabulary 3"],
    );
    assert!(!nothing.exists() || std::fs::read_dir(&nothing).unwrap().next().is_none());
}

#[test]
fn pytorch_roundtrip_where_python_has_torch() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch, safetensors, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!(
            "SKIPPED, not passed: python3 has no torch, safetensors and numpy; run tools/pytorch/roundtrip.py by hand"
        );
        return;
    }
    let dir = tmp("roundtrip");
    let run = dir.join("run");
    train_tiny_tied_lstm(&run);
    let out = Command::new("python3")
        .current_dir(root())
        .args([
            "tools/pytorch/roundtrip.py",
            "--xtask",
            env!("CARGO_BIN_EXE_rnnlm"),
        ])
        .args(["--run", s(&run), "--work", s(&dir.join("work"))])
        .env("RNNLM_AUTO_BUILD", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"roundtrip\": \"ok\""),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tiny run of the book's scratch RNN (`--out run`, extra args appended), trained from `cwd`.
fn tiny_run(cwd: &Path, run: &str, extra: &[&str]) -> Output {
    let config = root().join("configs/scratch_sequential.toml");
    let mut args = vec![
        "train",
        "--config",
        s(&config),
        "--out",
        run,
        "--epochs",
        "2",
        "--set",
        "model.num_hiddens=32",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    xtask(&args).current_dir(cwd).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn force_replaces_only_run_directories_and_never_the_current_one() {
    let dir = tmp("force");
    // Someone's folder: --force refuses it and leaves it as it was.
    std::fs::create_dir_all(dir.join("precious")).unwrap();
    std::fs::write(dir.join("precious/notes.txt"), "mine").unwrap();
    let out = tiny_run(&dir, "precious", &["--force"]);
    assert!(
        stderr(&out).contains("is not a run directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("precious/notes.txt")).unwrap(),
        "mine"
    );
    // A run directory with a file rnnlm does not write: refused, naming the file.
    assert!(tiny_run(&dir, "r", &[]).status.success());
    std::fs::write(dir.join("r/notes.txt"), "mine").unwrap();
    let out = tiny_run(&dir, "r", &["--force"]);
    assert!(stderr(&out).contains("notes.txt"), "{}", stderr(&out));
    std::fs::remove_file(dir.join("r/notes.txt")).unwrap();
    // Never the current directory, or one above it.
    let out = tiny_run(&dir.join("r"), ".", &["--force"]);
    assert!(
        stderr(&out).contains("current directory"),
        "{}",
        stderr(&out)
    );
    let out = tiny_run(&dir.join("r/checkpoints"), "..", &["--force"]);
    assert!(
        stderr(&out).contains("current directory"),
        "{}",
        stderr(&out)
    );
    assert!(dir.join("r/checkpoints/LATEST").exists());
    // Without --force a run with a checkpoint is kept; with it, replaced.
    assert!(stderr(&tiny_run(&dir, "r", &[])).contains("--resume"));
    assert!(tiny_run(&dir, "r", &["--force"]).status.success());
    // A run that never reached a checkpoint holds nothing to lose: it starts again.
    std::fs::remove_dir_all(dir.join("r/checkpoints")).unwrap();
    std::fs::create_dir(dir.join("r/checkpoints")).unwrap();
    let out = tiny_run(&dir, "r", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(dir.join("r/checkpoints/LATEST")).unwrap();
    let out = xtask(&["train", "--resume", "r", "--quiet"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("starting it from the beginning"));
    // Sizes that overflow or cannot be allocated, and out-of-range values, are refused
    // before anything is written.
    for (set, needle) in [
        ("train.batch_size=4611686018427387904", "overflows"),
        ("model.num_hiddens=1000000000", "this tool trains"),
    ] {
        let out = tiny_run(&dir, "big", &["--set", set]);
        assert!(stderr(&out).contains(needle), "{set}: {}", stderr(&out));
        assert!(!dir.join("big").exists(), "{set} made a run directory");
    }
    for (flag, value) in [("--threads", "100000"), ("--lr", "NaN"), ("--lr", "-1")] {
        let out = tiny_run(&dir, "big", &[flag, value]);
        assert!(
            !out.status.success() && stderr(&out).contains(flag),
            "{}",
            stderr(&out)
        );
        assert!(!dir.join("big").exists());
    }
}

#[test]
fn resume_refuses_what_would_change_the_run_and_two_runs_never_share_one() {
    let dir = tmp("resume-checks");
    // Relative paths are recorded absolute: the run resumes from any directory.
    std::fs::write(
        dir.join("text.txt"),
        "the time machine by h g wells ".repeat(200),
    )
    .unwrap();
    let out = tiny_run(&dir, "r", &["--corpus", "text.txt", "--dtype", "f64"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = dir.join("r");
    // f64 is recorded: reading the run needs no flag, and f32 reads it too.
    ok(&["generate", "--checkpoint", s(&r), "--prefix", "the"]);
    ok(&["eval", "--checkpoint", s(&r), "--dtype", "f32"]);
    let resume = |extra: &[&str]| {
        let mut args = vec!["train", "--resume", s(&r), "--quiet"];
        args.extend_from_slice(extra);
        run_xtask(&args)
    };
    for (extra, needle) in [
        (&["--lr", "0.5"][..], "train.lr would change"),
        (
            &["--set", "model.num_hiddens=64"],
            "model.num_hiddens would change",
        ),
        (&["--dtype", "f32"], "computes in f64"),
        (
            &["--threads", "1", "--set", "train.num_epochs=3"],
            "threads",
        ),
    ] {
        let err = stderr(&resume(extra));
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let model = std::fs::read_to_string(r.join("model.json")).unwrap();
    std::fs::write(r.join("model.json"), model.replace("32", "33")).unwrap();
    assert!(stderr(&resume(&["--epochs", "3"])).contains("was it edited"));
    std::fs::write(r.join("model.json"), &model).unwrap();
    // What may change is recorded.
    let out = resume(&["--epochs", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(config.contains("num_epochs = 3"), "{config}");
    assert_eq!(perplexities(&r).len(), 3);
    // A second process on the same run is refused while the first holds it, and the lock
    // dies with its holder (kill -9).
    let mut first = xtask(&["train", "--resume", s(&r), "--epochs", "100000", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while perplexities(&r).len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run does not advance"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = stderr(&resume(&["--epochs", "100000"]));
    assert!(err.contains("in use by another rnnlm process"), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        resume(&["--epochs", &(perplexities(&r).len() + 1).to_string()])
            .status
            .success()
    );
}

/// Peak resident memory (VmHWM, kB) of a command, read from /proc while it runs.
fn peak_rss_kb(mut cmd: Command) -> u64 {
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            peak = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    peak
}

#[test]
fn generation_runs_in_constant_memory() {
    let dir = tmp("gen-memory");
    let out = tiny_run(&dir, "r", &["--set", "model.num_hiddens=256"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let peak = |n: &str| {
        peak_rss_kb(xtask(&[
            "generate",
            "--checkpoint",
            s(&dir.join("r")),
            "--num-preds",
            n,
            "--temperature",
            "1",
        ]))
    };
    let (short, long) = (peak("2000"), peak("40000"));
    // Before generation left the autodiff device, 38,000 more tokens took ~300 MB more.
    assert!(
        long < short + 30_000,
        "peak RSS {short} kB for 2,000 tokens, {long} kB for 40,000"
    );
}

/// Disk full and a read-only file system, on a 600 kB tmpfs (mounting needs root; the test
/// says it was skipped elsewhere).
#[test]
fn disk_full_and_read_only_runs_keep_the_last_checkpoint_where_a_tmpfs_mounts() {
    let dir = tmp("disk-full");
    let mount = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !mount(&["-t", "tmpfs", "-o", "size=600k", "tmpfs", s(&dir)]) {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs at {} (needs root)",
            dir.display()
        );
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir);
    let run = dir.join("r");
    // One checkpoint of a 300-wide RNN takes ~430 kB: the second does not fit.
    let out = tiny_run(&dir, "r", &["--set", "model.num_hiddens=300"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needle in [
        "No space left on device",
        "model.bpk",
        "the checkpoint of epoch 1 is kept",
    ] {
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }
    ok(&["generate", "--checkpoint", s(&run), "--prefix", "time"]);
    // Read-only: resuming is a clear error naming a path; reading still works.
    assert!(mount(&["-o", "remount,ro", s(&dir)]));
    let resumed = run_xtask(&["train", "--resume", s(&run), "--quiet"]);
    let err = stderr(&resumed);
    ok(&["generate", "--checkpoint", s(&run), "--prefix", "time"]);
    assert_eq!(resumed.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Read-only file system") && err.contains(s(&run)),
        "{err}"
    );
}
