//! rnnlm's command line: the binary `rnnlm` (`cargo install --path xtask`), which
//! `cargo xtask` (an alias for `cargo run --release -p xtask --`) runs in the repository.
//! With no arguments it lists the commands; `<command> --help` explains each.

mod backend;
mod bench;
mod bptt;
mod check_backend;
mod corpus;
mod ngram;
mod parity;
mod pins;
mod plot;
mod runs;
mod seqmodel;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rnnlm",
    about = "rnnlm: recurrent language models on Burn (Dive into Deep Learning ch. 8)"
)]
#[command(arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Vocabulary, corpus, n-gram counts and Zipf plot of a corpus (book 8.2, 8.3).
    Corpus(corpus::CorpusArgs),
    /// Laplace-smoothed n-gram language model baseline (book 8.3) on a held-out tail.
    Ngram(ngram::NgramArgs),
    /// One training step on a PyTorch fixture's inputs, written out for comparison.
    Parity(parity::ParityArgs),
    /// Perplexity curves of several runs in one SVG figure.
    Plot(plot::PlotArgs),
    /// Sine-wave autoregression with k-step prediction (book 8.1).
    Seqmodel(seqmodel::SeqmodelArgs),
    /// Train a model from an experiment config.
    Train(train::TrainArgs),
    /// Perplexity of a trained model on a split of its corpus or another text.
    Eval(train::EvalArgs),
    /// Continue a prefix with a trained model (streamed; greedy or sampled).
    Generate(train::GenerateArgs),
    /// The run directories under DIR (default runs/) as a table.
    Runs(runs::RunsArgs),
    /// Write a run's model as safetensors under PyTorch `state_dict` names.
    Export(train::ExportArgs),
    /// Make a run directory from a safetensors model (e.g. trained in PyTorch).
    Import(train::ImportArgs),
    /// Gradient norms through time of one minibatch, trained vs untrained, tanh vs relu (book 8.7).
    BpttReport(bptt::BpttArgs),
    /// Install, build and check another backend: parity fixtures, two epochs, generation.
    CheckBackend(check_backend::CheckArgs),
    /// Training speed and memory, optionally side by side with the book's PyTorch code.
    Bench(bench::BenchArgs),
    /// Generate (--write) or check the feature pins in xtask/Cargo.toml (one build of Burn).
    FeaturePins(pins::PinsArgs),
    /// (internal) one bench side: trains an epoch per line on stdin.
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

// The host engine allocates its per-minibatch buffers afresh; glibc's malloc keeps
// freed ones fragmented (peak RSS 2-4x the live memory), mimalloc hands them back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before handing it back to the system: 10 s, not
/// its default 1 s. Every training step frees and allocates tens of MB (parameter copies,
/// gradients, the optimizer's new tensors); with 1 s, some of it went back and came again
/// as fresh pages the kernel zeroes (3% of the large char model's time). Measured: large
/// char model, 1 thread, +2.1% tokens/s, peak RSS 154 vs 151 MiB; PTB, 2 threads, 2
/// epochs, +2.7%, 253 vs 242 MiB (docs/performance.md).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`libmimalloc-sys` names only
/// the v2 options; v3 keeps the numbering, deprecated entries stay in place).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Unless the user set it. SAFETY: an option mimalloc reads whenever it schedules a
    // purge; set before any thread but this one exists.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // The delay holds freed memory; where the host engine frees its buffers at once (an
    // epoch's end), it goes back without waiting. SAFETY: collects the calling thread's
    // heap and purges the freed memory of every thread.
    rnnlm_model::bptt::set_give_back(|| unsafe { libmimalloc_sys::mi_collect(true) });
    // Like other command-line tools, end quietly when the reader of stdout goes away
    // (`cargo xtask corpus | head`) instead of panicking on the failed write.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Corpus(args) => corpus::run(args),
        Command::Ngram(args) => ngram::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Seqmodel(args) => seqmodel::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => train::eval(args),
        Command::Generate(args) => train::generate(args),
        Command::Runs(args) => runs::run(args),
        Command::Export(args) => train::export(args),
        Command::Import(args) => train::import(args),
        Command::Bench(args) => bench::run(args),
        Command::BpttReport(args) => bptt::run(args),
        Command::CheckBackend(args) => check_backend::run(args),
        Command::BenchWorker(args) => bench::worker(args),
        Command::FeaturePins(args) => pins::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
