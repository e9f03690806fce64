//! Experiment configs: one TOML file per experiment, every key with a documented
//! default, unknown keys an error naming the file and key, `--set key=value` overrides.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rnnlm_data::{
    Cleaning, Corpus, CorpusSource, DataDirs, LoadOptions, Sampler, TokenKind, load_corpus_with,
};
use rnnlm_model::{CellKind, Clipping, Engine, InitKind, ModelKind, fused_applies};
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
    /// A registered dataset (`time-machine`, `tinyshakespeare`, `ptb`, `jaychou-lyrics`);
    /// ignored when `train` is set.
    pub dataset: String,
    /// Your own UTF-8 training text instead of a registered dataset.
    #[serde(alias = "corpus")]
    pub train: Option<PathBuf>,
    /// Your own validation and test texts (with `train`).
    pub valid: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// Cleaning of your own files: `letters` (the book's), `unicode` (every character,
    /// line breaks as spaces) or `lines` (everything, line breaks included).
    pub cleaning: Cleaning,
    /// `char` or `word`.
    pub token: TokenKind,
    /// Keep the first `max_tokens` training tokens; 0 keeps all.
    pub max_tokens: usize,
    /// Tokens rarer than this map to `<unk>`.
    pub min_freq: usize,
    /// Word level: end every line with `<eos>` (word_language_model).
    pub eos: bool,
    /// A corpus of one text splits its tail: train is the head, then valid, then test
    /// (contiguous, no shuffling). 0 trains on everything, as the book does.
    pub valid_fraction: f64,
    pub test_fraction: f64,
    /// A mirror directory holding the dataset files (else `RNNLM_DATA_DIR`, the cache, a download).
    pub data_dir: Option<PathBuf>,
}

impl DataConfig {
    pub fn source(&self) -> CorpusSource {
        match &self.train {
            Some(path) => CorpusSource::File {
                path: path.clone(),
                valid: self.valid.clone(),
                test: self.test.clone(),
                cleaning: self.cleaning,
            },
            None => CorpusSource::Dataset(self.dataset.clone()),
        }
    }

    /// The corpus these settings describe (shipped, mirror, cache or download; sha1-verified).
    pub fn load_corpus(&self) -> Result<Corpus> {
        let dirs = DataDirs::from_env(self.data_dir.clone());
        let options = LoadOptions {
            token: self.token,
            max_tokens: self.max_tokens,
            min_freq: self.min_freq,
            eos: self.eos,
            valid_fraction: self.valid_fraction,
            test_fraction: self.test_fraction,
        };
        Ok(load_corpus_with(&self.source(), &options, &dirs)?)
    }

    /// Makes the file paths absolute (relative ones are read from the current directory),
    /// so the run's recorded config finds them from anywhere.
    pub fn absolutize(&mut self) -> Result<()> {
        for path in [
            &mut self.train,
            &mut self.valid,
            &mut self.test,
            &mut self.data_dir,
        ]
        .into_iter()
        .flatten()
        {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("data.valid_fraction", self.valid_fraction),
            ("data.test_fraction", self.test_fraction),
        ] {
            if !(0.0..1.0).contains(&value) {
                bail!("{key} = {value}: must be a fraction in [0, 1)");
            }
        }
        if self.valid_fraction + self.test_fraction >= 1.0 {
            bail!(
                "data.valid_fraction + data.test_fraction = {} + {}: must sum to less than 1 (the head trains)",
                self.valid_fraction,
                self.test_fraction
            );
        }
        if self.train.is_none() && (self.valid.is_some() || self.test.is_some()) {
            bail!("data.valid and data.test need data.train (your own training text)");
        }
        if self.eos && self.token != TokenKind::Word {
            bail!(
                "data.eos = true needs data.token = \"word\" (it ends each line's words with <eos>)"
            );
        }
        Ok(())
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "time-machine".into(),
            train: None,
            valid: None,
            test: None,
            cleaning: Cleaning::Unicode,
            token: TokenKind::Char,
            max_tokens: 10_000,
            min_freq: 0,
            eos: false,
            valid_fraction: 0.0,
            test_fraction: 0.0,
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
    /// The section that describes `config` (an imported model's).
    pub fn of(config: &rnnlm_model::ModelConfig) -> Self {
        Self {
            kind: config.kind,
            cell: config.cell,
            num_hiddens: config.num_hiddens,
            num_layers: config.num_layers,
            bidirectional: config.bidirectional,
            embedding_dim: config.embedding_dim,
            dropout: config.dropout,
            tied: config.tied,
            init: config.init,
            init_range: config.init_range,
            forget_bias: config.forget_bias,
        }
    }

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
    /// The book's `sgd`: `p -= lr * g` (with `momentum`, PyTorch's heavy ball).
    Sgd,
    /// Adam with PyTorch's defaults (first edition's concise model, `lr = 1e-3`).
    Adam,
    /// AdamW (decoupled `weight_decay`, PyTorch's default 0.01).
    Adamw,
    /// RMSprop with smoothing `alpha` (char-rnn's `decay_rate` 0.95), no momentum, eps 1e-8.
    Rmsprop,
    Adagrad,
}

/// How the learning rate changes over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant.
    None,
    /// Divide by `lr_factor` after an epoch whose validation perplexity did not improve
    /// (word_language_model divides by 4).
    Plateau,
    /// Multiply by `lr_decay` after every epoch from epoch `lr_decay_after` on (char-rnn:
    /// 0.97 after 10; Zaremba et al.: 0.5 after 4).
    Exponential,
    /// Multiply by `lr_decay` every `lr_step` epochs.
    Step,
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
    /// SGD momentum (0: none).
    pub momentum: f64,
    /// L2 penalty (decoupled for AdamW); 0: none.
    pub weight_decay: f64,
    /// RMSprop's smoothing constant.
    pub alpha: f64,
    pub schedule: Schedule,
    /// `plateau`: the divisor.
    pub lr_factor: f64,
    /// `exponential` and `step`: the factor.
    pub lr_decay: f64,
    /// `exponential`: the first epoch after which the rate decays.
    pub lr_decay_after: usize,
    /// `step`: epochs between decays.
    pub lr_step: usize,
    /// Stop after this many epochs without a better validation perplexity; 0: never.
    pub patience: usize,
    /// `grad_clipping` threshold on the global L2 norm (the book's); 0: none.
    pub theta: f64,
    /// Clip every gradient value into `[-clip_value, clip_value]` first (char-rnn's
    /// `grad_clip` 5); 0: none.
    pub clip_value: f64,
    /// Rows of the validation and test evaluation (state carried from zero through the
    /// whole split, as word_language_model's `eval_batch_size` 10).
    pub eval_batch_size: usize,
    /// Also evaluate on the validation split every this many minibatches (char-rnn's
    /// `eval_val_every`); 0: at the end of each epoch only.
    pub eval_every: usize,
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
            momentum: 0.0,
            weight_decay: 0.0,
            alpha: 0.99,
            schedule: Schedule::None,
            lr_factor: 4.0,
            lr_decay: 0.97,
            lr_decay_after: 10,
            lr_step: 10,
            patience: 0,
            theta: 1.0,
            clip_value: 0.0,
            eval_batch_size: 10,
            eval_every: 0,
            num_epochs: 500,
            seed: 0,
            predict_every: 10,
            checkpoint_every: 1,
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
        let file = || format!("invalid config {}", path.display());
        toml::from_str::<toml::Table>(&text).with_context(file)?;
        // The file parses: an error now comes from it or from an override; say which ones.
        Self::parse(&text, overrides).with_context(|| match overrides {
            [] => file(),
            _ => format!("{} with {}", file(), overrides.join(" ")),
        })
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
            ("train.eval_batch_size", t.eval_batch_size),
            ("train.lr_step", t.lr_step),
            ("model.num_hiddens", self.model.num_hiddens),
            ("model.num_layers", self.model.num_layers),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("{key} = 0: must be a positive integer");
            }
        }
        for (key, value) in [
            ("train.lr", t.lr),
            ("train.lr_factor", t.lr_factor),
            ("train.lr_decay", t.lr_decay),
        ] {
            if !(value.is_finite() && value > 0.0) {
                bail!("{key} = {value}: must be a positive number");
            }
        }
        for (key, value) in [
            ("train.theta", t.theta),
            ("train.clip_value", t.clip_value),
            ("train.weight_decay", t.weight_decay),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                bail!("{key} = {value}: must be a number >= 0 (0 turns it off)");
            }
        }
        for (key, value) in [("train.momentum", t.momentum), ("train.alpha", t.alpha)] {
            if !(0.0..1.0).contains(&value) {
                bail!("{key} = {value}: must be in [0, 1)");
            }
        }
        self.data.validate()?;
        if !(t.truncation_pi > 0.0 && t.truncation_pi <= 1.0) {
            bail!(
                "train.truncation_pi = {}: must be a probability in (0, 1]",
                t.truncation_pi
            );
        }
        if t.sampler == Sampler::Random && t.state == StateMode::Carry {
            bail!(
                "train.state = \"carry\" needs train.sampler = \"sequential\" or \"batchify\": random minibatches do not continue each other (use state = \"reset\")"
            );
        }
        self.model_config(1).validate()?;
        if t.engine == Some(Engine::Fused) && !self.fused_applies() {
            bail!(
                "train.engine = \"fused\" covers one-direction models (not {}); use \"autodiff\"",
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

    /// Gradient clipping as `train.theta` and `train.clip_value` ask (0: off).
    pub fn clipping(&self) -> Clipping {
        let on = |v: f64| (v > 0.0).then_some(v);
        Clipping {
            norm: on(self.train.theta),
            value: on(self.train.clip_value),
        }
    }

    /// The keys a resumed run may change: they extend it, or change only what it prints
    /// or where it finds the same (sha1-verified) data.
    pub const RESUMABLE: [&str; 6] = [
        "train.num_epochs",
        "train.predict_every",
        "train.checkpoint_every",
        "train.prefixes",
        "train.num_preds",
        "data.data_dir",
    ];

    /// The dotted keys whose values differ between `self` and `other`.
    pub fn changed_keys(&self, other: &Self) -> Vec<String> {
        fn walk(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let name = format!("{prefix}{key}");
                match (a.get(key), b.get(key)) {
                    (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                        walk(&format!("{name}."), x, y, out)
                    }
                    (x, y) if x != y => out.push(name),
                    _ => {}
                }
            }
        }
        let table = |c: &Self| toml::Table::try_from(c).expect("a config always serializes");
        let mut out = Vec::new();
        walk("", &table(self), &table(other), &mut out);
        out
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config always serializes")
    }
}

/// `a.b.c=value`: the value is read as TOML (`0.5`, `true`, `"text"`, `[1, 2]`),
/// or as a plain string when it is not valid TOML (`--set data.dataset=time-machine`);
/// `a.b.c=` with nothing after `=` removes the key (back to its default).
fn set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("override `{assignment}` is not key=value");
    };
    if raw.trim().is_empty() {
        let mut current = Some(&mut *table);
        let parts: Vec<&str> = key.trim().split('.').collect();
        let (last, parents) = parts.split_last().expect("split gives at least one part");
        for part in parents {
            current = current.and_then(|t| t.get_mut(*part)?.as_table_mut());
        }
        if let Some(t) = current {
            t.remove(*last);
        }
        return Ok(());
    }
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
        // An empty value removes a key: a config's forget bias, for a GRU.
        let lstm = "[model]\nkind = \"lm\"\ncell = \"lstm\"\nforget_bias = 1.0\n";
        let gru = TrainConfig::parse(
            lstm,
            &["model.cell=\"gru\"".into(), "model.forget_bias=".into()],
        );
        assert_eq!(gru.unwrap().model.forget_bias, None);
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
        assert!(err("", &["model.num_layers=2"]).contains("\"concise\" or \"lm\""));
        assert!(err("", &["train"]).contains("key=value"));
        assert!(err("", &["train.sampler=random"]).contains("reset"));
        assert!(err("", &["train.engine=jit"]).contains("engine"));
        let lm = |extra: &[&str]| {
            let mut set = vec!["model.kind=lm", "model.cell=lstm"];
            set.extend_from_slice(extra);
            err("", &set)
        };
        assert!(lm(&["model.cell=transformer"]).contains("cell"));
        assert!(
            lm(&["model.dropout=1.0"])
                .contains("model.dropout = 1: must be a probability in [0, 1)")
        );
        assert!(lm(&["model.dropout=-0.1"]).contains("model.dropout = -0.1"));
        assert!(lm(&["model.num_layers=0"]).contains("model.num_layers = 0"));
        let tied = lm(&["model.tied=true", "model.embedding_dim=100"]);
        assert!(
            tied.contains("model.tied = true needs model.embedding_dim == model.num_hiddens"),
            "{tied}"
        );
        assert!(lm(&["model.init_range=0", "model.init=uniform"]).contains("model.init_range = 0"));
        assert!(
            err("", &["model.kind=concise", "model.dropout=0.5"])
                .contains("belong to model.kind = \"lm\"")
        );
        assert!(lm(&["model.cell=gru", "model.forget_bias=1.0"]).contains("forget_bias"));
        let fractions = err("", &["data.valid_fraction=0.5", "data.test_fraction=0.5"]);
        assert!(fractions.contains("must sum to less than 1"), "{fractions}");
        assert!(err("", &["data.test_fraction=1.5"]).contains("data.test_fraction = 1.5"));
        assert!(err("", &["data.eos=true"]).contains("data.eos = true needs data.token"));
        assert!(err("", &["data.valid=\"v.txt\""]).contains("need data.train"));
        assert!(err("", &["train.optimizer=lbfgs"]).contains("optimizer"));
        assert!(err("", &["train.schedule=cosine"]).contains("schedule"));
        assert!(err("", &["train.momentum=1"]).contains("train.momentum = 1"));
        assert!(err("", &["train.clip_value=-5"]).contains("train.clip_value = -5"));
        assert!(err("", &["train.eval_batch_size=0"]).contains("train.eval_batch_size = 0"));
        // An old key that was replaced is an error naming it.
        assert!(err("", &["data.holdout=0.1"]).contains("holdout"));
        let both_ways = [
            "model.kind=concise",
            "model.bidirectional=true",
            "train.engine=fused",
        ];
        assert!(err("", &both_ways).contains("autodiff"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Every key a config has, from its own serialization.
    fn keys() -> Vec<String> {
        let table = toml::Table::try_from(TrainConfig::default()).unwrap();
        let mut keys = Vec::new();
        for (section, value) in &table {
            for key in value.as_table().unwrap().keys() {
                keys.push(format!("{section}.{key}"));
            }
        }
        keys.extend(
            [
                "train.engine",
                "data.train",
                "model.forget_bias",
                "x.y",
                "data",
            ]
            .map(String::from),
        );
        keys
    }

    fn values() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("1e308".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("4611686018427387904".to_string()),
            Just("true".to_string()),
            Just("\"lstm\"".to_string()),
            Just("[1, 2]".to_string()),
            Just("{a = 1}".to_string()),
            "[a-z0-9.\"\\[\\]{}=-]{0,12}",
            any::<f64>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
        ]
    }

    proptest! {
        // Any `--set` overrides over any key: a config that passes its own checks (and
        // survives a round trip through its TOML), or an error; never a panic.
        #[test]
        fn overrides_give_a_checked_config_or_an_error(
            sets in prop::collection::vec((prop::sample::select(keys()), values()), 0..6),
        ) {
            let overrides: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Ok(config) = TrainConfig::parse("", &overrides) {
                prop_assert!(config.validate().is_ok());
                prop_assert_eq!(TrainConfig::parse(&config.to_toml(), &[]).unwrap(), config);
            }
        }

        // Any text as a config file: parsed and checked, or an error.
        #[test]
        fn any_text_is_a_config_or_an_error(text in "[\\[\\]a-z_=.\"0-9 \n-]{0,80}") {
            let _ = TrainConfig::parse(&text, &[]);
        }
    }
}
