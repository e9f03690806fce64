//! Weights that move to and from PyTorch: a run's model as safetensors under its
//! `state_dict` names (word_language_model's `RNNModel` for `lm`, the book's names for
//! the chapter-8 models), with the vocabulary and the model config in the metadata; and
//! a run directory made from such a file.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use rnnlm_data::Vocab;
use rnnlm_model::parity::fixture_spec;
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Model, ModelConfig, ModelKind};

use crate::progress::Progress;
use crate::{ModelSection, RunDir, RunOptimizer, TrainConfig, burn_optimizer};

/// Metadata keys of an export.
pub const MODEL_KEY: &str = "rnnlm.model";
pub const VOCAB_KEY: &str = "rnnlm.vocab";

/// The model's parameters by name, the vocab and the model config (and, for `lm`, the
/// `fixtures/lm` metadata keys `cell`, `V`, `H`, `L`, `E`, `input`, `tied`).
pub fn export(model: &Model, config: &ModelConfig, vocab: &Vocab) -> Result<NamedTensors> {
    let mut out = NamedTensors {
        file: "export".into(),
        ..Default::default()
    };
    for (name, p) in model.named_params() {
        out.insert(name, p.data());
    }
    let meta = &mut out.metadata;
    meta.insert(MODEL_KEY.into(), serde_json::to_string(config)?);
    meta.insert(VOCAB_KEY.into(), serde_json::to_string(vocab)?);
    if config.kind == ModelKind::Lm {
        let one_hot = config.embedding_dim == 0;
        for (key, value) in [
            ("cell", config.cell.name().to_string()),
            ("V", config.vocab_size.to_string()),
            ("H", config.num_hiddens.to_string()),
            ("L", config.num_layers.to_string()),
            ("E", config.embedding_dim.to_string()),
            (
                "input",
                if one_hot { "one_hot" } else { "embedding" }.into(),
            ),
            ("tied", config.tied.to_string()),
        ] {
            meta.insert(key.into(), value);
        }
    }
    Ok(out)
}

/// The model config of an export (ours), or of a `fixtures/lm`-style file (a PyTorch
/// `state_dict` with `cell`, `V`, `H`, ... metadata).
pub fn imported_config(tensors: &NamedTensors) -> Result<ModelConfig> {
    match tensors.metadata.get(MODEL_KEY) {
        Some(json) => serde_json::from_str(json)
            .with_context(|| format!("{}: invalid `{MODEL_KEY}` metadata", tensors.file)),
        None => Ok(fixture_spec(tensors)?.config),
    }
}

/// The vocabulary of an export, when it carries one.
pub fn imported_vocab(tensors: &NamedTensors) -> Result<Option<Vocab>> {
    tensors
        .metadata
        .get(VOCAB_KEY)
        .map(|json| {
            serde_json::from_str(json)
                .with_context(|| format!("{}: invalid `{VOCAB_KEY}` metadata", tensors.file))
        })
        .transpose()
}

/// The model `tensors` hold, checked against `vocab`: everything `import` checks before
/// it writes anything.
pub fn imported_model(
    tensors: &NamedTensors,
    vocab: &Vocab,
    device: &Device,
) -> Result<(ModelConfig, Model)> {
    let model_config = imported_config(tensors)?;
    if model_config.vocab_size != vocab.len() {
        bail!(
            "{}: the model has {} tokens, the vocabulary {}",
            tensors.file,
            model_config.vocab_size,
            vocab.len()
        );
    }
    let model = Model::from_named(&model_config, tensors, device)?;
    Ok((model_config, model))
}

/// Makes `run` a run directory holding `tensors` as its model: `config.toml` (`base`
/// with the imported model section), `vocab.json`, `model.json` and a checkpoint at
/// epoch 0, ready for `generate`, `eval` and `train --resume` (fine-tuning).
pub fn import(
    tensors: &NamedTensors,
    vocab: &Vocab,
    base: &TrainConfig,
    run: &RunDir,
    device: &Device,
) -> Result<ModelConfig> {
    let (model_config, model) = imported_model(tensors, vocab, device)?;
    let config = TrainConfig {
        model: ModelSection::of(&model_config),
        ..base.clone()
    };
    config.validate()?;
    run.write_header(&config, vocab, &model_config)?;
    run.save_checkpoint(
        &model,
        // No state yet: a resumed run starts the optimizer its engine picks.
        &RunOptimizer::Burn(burn_optimizer(&config.train)),
        &Progress::new(config.train.lr),
        None,
    )?;
    Ok(model_config)
}
