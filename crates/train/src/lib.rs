//! Training for rnnlm: experiment configs (`config.rs`), the chapter-8 training loop
//! (`learner.rs`), run directories with crash-safe checkpoints (`run_dir.rs`), and the
//! sine-wave autoregression of section 8.1 (`sine.rs`).

mod config;
mod learner;
mod run_dir;
mod sine;
#[cfg(test)]
mod tests;

pub use config::{
    DataConfig, ModelSection, Optimizer, StateMode, TrainConfig, TrainSection, Truncation,
};
pub use learner::{Output, Session, Summary, holdout_start, new_optimizer, train_epoch};
pub use run_dir::{Checkpoint, EpochMetrics, Existing, Progress, RunDir};
pub use sine::{SineConfig, SineReport, run_sine};
