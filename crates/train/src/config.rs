//! Experiment configs: one TOML file per experiment, every key with a documented
//! default, unknown keys an error naming the file and key, `--set key=value` overrides.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rnnlm_data::{Cleaning, Corpus, CorpusSource, DataDirs, Sampler, TokenKind, load_corpus};
use rnnlm_model::{CellKind, Engine, InitKind, ModelKind, fused_applies};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub model: ModelSection,
    pub train: TrainSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A registered dataset (`time-machine`, `jaychou-lyrics`); ignored when `corpus` is set.
    pub dataset: String,
    /// A plain UTF-8 text file of your own instead of a registered dataset.
    pub corpus: Option<PathBuf>,
    /// Cleaning of `corpus`: `letters` (the book's) or `unicode` (keep everything).
    pub cleaning: Cleaning,
    /// `char` or `word`.
    pub token: TokenKind,
    /// Keep the first `max_tokens` tokens; 0 keeps all.
    pub max_tokens: usize,
    /// Tokens rarer than this map to `<unk>`.
    pub min_freq: usize,
    /// Fraction of the corpus (its tail) held out of training and scored at the end,
    /// the split `cargo xtask ngram` uses; 0 trains on everything, as the book does.
    pub holdout: f64,
    /// A mirror directory holding the dataset files (else `RNNLM_DATA_DIR`, the cache, a download).
    pub data_dir: Option<PathBuf>,
}

impl DataConfig {
    pub fn source(&self) -> CorpusSource {
        CorpusSource::new(&self.dataset, self.corpus.as_deref(), self.cleaning)
    }

    /// The corpus these settings describe (mirror, cache or download; sha1-verified).
    pub fn load_corpus(&self) -> Result<Corpus> {
        let dirs = DataDirs::from_env(self.data_dir.clone());
        Ok(load_corpus(
            &self.source(),
            self.token,
            self.max_tokens,
            self.min_freq,
            &dirs,
        )?)
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "time-machine".into(),
            corpus: None,
            cleaning: Cleaning::Unicode,
            token: TokenKind::Char,
            max_tokens: 10_000,
            min_freq: 0,
            holdout: 0.0,
            data_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// `scratch` (book 8.5), `concise` (8.6: one-hot input, a recurrent layer, a linear
    /// head) or `lm` (word_language_model's `RNNModel`: embedding, layers, decoder).
    pub kind: ModelKind,
    /// `rnn_tanh`, `rnn_relu`, `gru` or `lstm` (concise and lm).
    pub cell: CellKind,
    pub num_hiddens: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// 0: one-hot input (the book, char-rnn); else the embedding width (lm).
    pub embedding_dim: usize,
    /// Dropout on the embedding output, between layers and before the decoder (lm).
    pub dropout: f64,
    /// The decoder reuses the embedding (lm; needs `embedding_dim == num_hiddens`).
    pub tied: bool,
    /// `book` (N(0, 0.01)), `uniform` (U(-init_range, init_range)) or `pytorch` (its
    /// defaults). The scratch model always uses the book's.
    pub init: InitKind,
    pub init_range: f64,
    /// Fill the LSTM forget gate's `bias_ih` with this value (char-rnn: 1).
    pub forget_bias: Option<f64>,
}

impl ModelSection {
    pub fn kind_name(&self) -> String {
        let h = self.num_hiddens;
        match self.kind {
            ModelKind::Scratch => format!("the scratch RNN (num_hiddens {h})"),
            _ => format!(
                "the {} {} model ({} x {h}{})",
                format!("{:?}", self.kind).to_lowercase(),
                self.cell.name(),
                self.num_layers,
                if self.embedding_dim > 0 {
                    format!(", embedding {}", self.embedding_dim)
                } else {
                    String::new()
                }
            ),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            kind: ModelKind::Scratch,
            cell: CellKind::RnnTanh,
            num_hiddens: 512,
            num_layers: 1,
            bidirectional: false,
            embedding_dim: 0,
            dropout: 0.0,
            tied: false,
            init: InitKind::Pytorch,
            init_range: 0.1,
            forget_bias: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// The book's `sgd`: `p -= lr * g`.
    Sgd,
    /// Adam with PyTorch's defaults (first edition's concise model, `lr = 1e-3`).
    Adam,
}

/// Whether the hidden state carries across minibatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMode {
    /// `begin_state` once per epoch, detached before each minibatch (truncated BPTT).
    Carry,
    /// `begin_state` before every minibatch (the book's `use_random_iter=True`).
    Reset,
}

/// How far gradients flow back through time within training (book 8.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    /// Through the `num_steps` of each minibatch, detached between minibatches (8.5).
    Regular,
    /// Tallec & Ollivier: at each step continue with probability `truncation_pi`,
    /// reweighted by `1 / truncation_pi` so the gradient stays unbiased.
    Randomized,
    /// Through a whole row of the epoch: one minibatch of `(len - 1) / (batch_size + 1)`
    /// steps per epoch (activations of every step are kept: memory grows with the corpus).
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub batch_size: usize,
    pub num_steps: usize,
    pub sampler: Sampler,
    pub state: StateMode,
    pub optimizer: Optimizer,
    pub lr: f64,
    /// `grad_clipping` threshold on the global L2 norm.
    pub theta: f64,
    pub num_epochs: usize,
    pub seed: u64,
    /// Print perplexity and predictions every this many epochs.
    pub predict_every: usize,
    pub checkpoint_every: usize,
    pub prefixes: Vec<String>,
    pub num_preds: usize,
    pub truncation: Truncation,
    /// Probability of continuing the backward pass at each step (randomized truncation).
    pub truncation_pi: f64,
    /// How gradients are computed: `autodiff` (Burn's, any model and backend) or `fused`
    /// (the written-out BPTT kernel on the host; one-direction models, stacked or not).
    /// Unset: `fused` on the CPU backends (flex, ndarray) where it applies, else `autodiff`.
    pub engine: Option<Engine>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch_size: 32,
            num_steps: 35,
            sampler: Sampler::Sequential,
            state: StateMode::Carry,
            optimizer: Optimizer::Sgd,
            lr: 1.0,
            theta: 1.0,
            num_epochs: 500,
            seed: 0,
            predict_every: 10,
            checkpoint_every: 10,
            prefixes: vec!["time traveller".into(), "traveller".into()],
            num_preds: 50,
            truncation: Truncation::Regular,
            truncation_pi: 0.9,
            engine: None,
        }
    }
}

impl TrainConfig {
    /// Reads `path`, applies `key=value` overrides (dotted keys, TOML values), checks it.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, overrides).with_context(|| format!("invalid config {}", path.display()))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        for assignment in overrides {
            set(&mut table, assignment)?;
        }
        let config: Self = table.try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let positive = [
            ("train.batch_size", t.batch_size),
            ("train.num_steps", t.num_steps),
            ("train.num_epochs", t.num_epochs),
            ("train.predict_every", t.predict_every),
            ("train.checkpoint_every", t.checkpoint_every),
            ("model.num_hiddens", self.model.num_hiddens),
            ("model.num_layers", self.model.num_layers),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("{key} = 0: must be a positive integer");
            }
        }
        for (key, value) in [("train.lr", t.lr), ("train.theta", t.theta)] {
            if !(value.is_finite() && value > 0.0) {
                bail!("{key} = {value}: must be a positive number");
            }
        }
        if !(t.truncation_pi > 0.0 && t.truncation_pi <= 1.0) {
            bail!(
                "train.truncation_pi = {}: must be a probability in (0, 1]",
                t.truncation_pi
            );
        }
        if !(0.0..=0.5).contains(&self.data.holdout) {
            bail!(
                "data.holdout = {}: must be a fraction in [0, 0.5]",
                self.data.holdout
            );
        }
        if t.sampler == Sampler::Random && t.state == StateMode::Carry {
            bail!(
                "train.state = \"carry\" needs train.sampler = \"sequential\": random minibatches do not continue each other (use state = \"reset\")"
            );
        }
        self.model_config(1).validate()?;
        if t.engine == Some(Engine::Fused) && !self.fused_applies() {
            bail!(
                "train.engine = \"fused\" covers one-direction tanh/relu models with one-hot input, no dropout and no tying (not {}); use \"autodiff\"",
                self.model.kind_name()
            );
        }
        Ok(())
    }

    fn fused_applies(&self) -> bool {
        fused_applies(&self.model_config(1))
    }

    /// `train.engine`, or when unset the fastest that applies: `fused` on a backend that
    /// computes on the host (`host_backend`), `autodiff` on the others.
    pub fn engine(&self, host_backend: bool) -> Engine {
        self.train
            .engine
            .unwrap_or(if host_backend && self.fused_applies() {
                Engine::Fused
            } else {
                Engine::Autodiff
            })
    }

    pub fn model_config(&self, vocab_size: usize) -> rnnlm_model::ModelConfig {
        let m = &self.model;
        rnnlm_model::ModelConfig::new(m.kind, vocab_size, m.num_hiddens)
            .with_num_layers(m.num_layers)
            .with_bidirectional(m.bidirectional)
            .with_cell(m.cell)
            .with_embedding_dim(m.embedding_dim)
            .with_dropout(m.dropout)
            .with_tied(m.tied)
            .with_init(if m.kind == ModelKind::Scratch {
                InitKind::Book
            } else {
                m.init
            })
            .with_init_range(m.init_range)
            .with_forget_bias(m.forget_bias)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serializes")
    }
}

/// `a.b.c=value`: the value is read as TOML (`0.5`, `true`, `"text"`, `[1, 2]`),
/// or as a plain string when it is not valid TOML (`--set data.dataset=time-machine`).
fn set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("override `{assignment}` is not key=value");
    };
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().expect("split gives at least one part");
    let mut current = table;
    for part in parents {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("override `{assignment}`: `{part}` is not a table"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = TrainConfig::parse(
            "[model]\nnum_hiddens = 256\n",
            &["train.lr=0.5".into(), "data.dataset=jaychou-lyrics".into()],
        )
        .unwrap();
        assert_eq!(c.model.num_hiddens, 256);
        assert_eq!(c.train.lr, 0.5);
        assert_eq!(c.data.dataset, "jaychou-lyrics");
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(TrainConfig::parse(&c.to_toml(), &[]).unwrap(), c);
        assert_eq!(c.engine(true), Engine::Fused);
        assert_eq!(c.engine(false), Engine::Autodiff);
        let set = TrainConfig::parse("[train]\nengine = \"autodiff\"\n", &[]).unwrap();
        assert_eq!(set.engine(true), Engine::Autodiff);
        assert_eq!(TrainConfig::parse(&set.to_toml(), &[]).unwrap(), set);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = |text: &str, set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            format!("{:#}", TrainConfig::parse(text, &set).unwrap_err())
        };
        assert!(err("[train]\nlearning_rate = 1\n", &[]).contains("learning_rate"));
        assert!(err("[train]\nlr = \"fast\"\n", &[]).contains("lr"));
        assert!(err("", &["train.lr=-1"]).contains("train.lr = -1"));
        assert!(err("", &["train.num_steps=0"]).contains("train.num_steps = 0"));
        assert!(err("", &["train.sampler=shuffled"]).contains("sampler"));
        assert!(err("", &["model.num_layers=2"]).contains("concise"));
        assert!(err("", &["train"]).contains("key=value"));
        assert!(err("", &["train.sampler=random"]).contains("reset"));
        assert!(err("", &["train.engine=jit"]).contains("engine"));
        let both_ways = [
            "model.kind=concise",
            "model.bidirectional=true",
            "train.engine=fused",
        ];
        assert!(err("", &both_ways).contains("autodiff"));
    }
}
