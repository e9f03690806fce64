//! Training for rnnlm: experiment configs (`config.rs`), one epoch of training
//! (`epoch.rs`), the training loop with validation, schedules and the test score
//! (`learner.rs`), the optimizers and their checkpoint files (`optim.rs`), what a run records (`progress.rs`), run directories with crash-safe
//! checkpoints (`run_dir.rs`), and the sine-wave autoregression of section 8.1 (`sine.rs`).

mod config;
mod epoch;
pub mod interchange;
mod learner;
mod optim;
mod progress;
mod run_dir;
mod sine;
#[cfg(test)]
mod tests;

pub use config::{
    DataConfig, ModelSection, Optimizer, Schedule, StateMode, TrainConfig, TrainSection, Truncation,
};
pub use epoch::{EpochOutcome, EpochStart, EpochTrain, MinibatchHook, train_epoch};
pub use learner::{Output, Session, Summary, check_corpus, next_lr};
pub use optim::{RunOptimizer, burn_optimizer, host_rule};
pub use progress::{Best, EpochMetrics, Interrupted, PartialEpoch, Progress, RunSummary, curves};
pub use run_dir::{Checkpoint, Existing, Opened, RunDir, RunInfo};
pub use sine::{SineConfig, SineReport, run_sine};
