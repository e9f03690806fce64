//! Training for rnnlm: experiment configs (`config.rs`), the chapter-8 training loop
//! (`learner.rs`) and run directories with crash-safe checkpoints (`run_dir.rs`).

mod config;
mod learner;
mod run_dir;

pub use config::{DataConfig, ModelSection, Optimizer, StateMode, TrainConfig, TrainSection};
pub use learner::{Output, Session, Summary, new_optimizer, train_epoch};
pub use run_dir::{Checkpoint, EpochMetrics, Existing, Progress, RunDir};
