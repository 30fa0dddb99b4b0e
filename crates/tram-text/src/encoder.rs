//! BERT-style Transformer encoders (BERT, XLM-RoBERTa, multilingual-e5) as Hugging Face builds them: a serde
//! [`EncoderConfig`] that mirrors `config.json`, weights addressed by Hugging Face key names (`embeddings.*`,
//! `encoder.layer.{i}.*`), post-LayerNorm blocks, padding masked out of attention.
//!
//! The building blocks are public and separate ([`Embeddings`], [`Layer`], [`EncoderStack`]) because the
//! cross-lingual task cuts the encoder in two: a frozen prefix run once and cached, and the top layers that
//! fine-tune (see `classifier.rs`).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};
use tram_core::InputNoise;
use tram_task::kit::activation::Activation;

use crate::error::{io_err, Error, Result};
use crate::layers::snapshot_weights_file;

fn default_model_type() -> String {
    "bert".into()
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> i64 {
    2
}
fn default_init_range() -> f64 {
    0.02
}

/// `config.json` of a BERT-style encoder (`BertConfig`, `XLMRobertaConfig`). Keys it does not use are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// `bert` (positions from 0), `xlm-roberta` / `roberta` / `camembert` (positions after the padding index).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Only `absolute` is supported (the relative kinds are for other checkpoints than the paper's).
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// Dropout of the classification head; `None`: `hidden_dropout_prob`, as Hugging Face does.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Std of the normal initialisation of new weights (the classification head).
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

/// How position ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// BERT: 0, 1, 2, ... for every token (e5 is BERT-style).
    FromZero,
    /// RoBERTa: `padding_idx + 1 + (number of real tokens so far)` for real tokens, `padding_idx` for padding.
    AfterPadding { padding_idx: i64 },
}

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| Error::ModelConfig { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate().map_err(|message| Error::ModelConfig { path: path.to_path_buf(), message })?;
        Ok(config)
    }

    /// The config of a Hugging Face snapshot folder (`dir/config.json`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !matches!(self.model_type.as_str(), "bert" | "xlm-roberta" | "roberta" | "camembert") {
            return Err(format!(
                "model_type `{}` is not a BERT-style encoder (expected bert, xlm-roberta, roberta or camembert)",
                self.model_type
            ));
        }
        Ok(())
    }

    pub fn positions(&self) -> Positions {
        match self.model_type.as_str() {
            "bert" => Positions::FromZero,
            _ => Positions::AfterPadding { padding_idx: self.pad_token_id.unwrap_or(1) },
        }
    }

    /// The prefix Hugging Face's task models put before the encoder's keys (`base_model_prefix`).
    pub fn base_prefix(&self) -> &'static str {
        match self.model_type.as_str() {
            "bert" => "bert",
            _ => "roberta",
        }
    }

    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}

/// Word + position + token-type embeddings, LayerNorm, dropout. The word table may hold a pruned vocabulary
/// (rows = the ids kept); ids index it directly.
#[derive(Debug)]
pub struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: nn::LayerNorm,
    dropout: f64,
    positions: Positions,
}

impl Embeddings {
    /// Variables under `p` (`word_embeddings`, `position_embeddings`, `token_type_embeddings`, `LayerNorm`);
    /// `word_rows` is the vocabulary size (smaller than `config.vocab_size` when pruned).
    pub fn new(p: &nn::Path, config: &EncoderConfig, word_rows: i64) -> Self {
        let h = config.hidden_size;
        let cfg = nn::EmbeddingConfig::default();
        Self {
            word: nn::embedding(p / "word_embeddings", word_rows, h, cfg),
            position: nn::embedding(p / "position_embeddings", config.max_position_embeddings, h, cfg),
            token_type: nn::embedding(p / "token_type_embeddings", config.type_vocab_size, h, cfg),
            norm: layer_norm(&(p / "LayerNorm"), config),
            dropout: config.hidden_dropout_prob,
            positions: config.positions(),
        }
    }

    /// The word embeddings of `ids` `[N, T]`: where TRAM-x, R3F and TRAM-Fisher add their noise (arXiv
    /// 2310.03646 v2 Eq. 5; the released code noises `word_embeddings` too).
    pub fn words(&self, ids: &Tensor) -> Tensor {
        self.word.forward(ids)
    }

    /// `[N, T, H]` from ids and a `[N, T]` mask (1 = token, 0 = padding), with `noise` on the word embeddings.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, noise: Option<&InputNoise>, train: bool) -> Tensor {
        let words = self.words(ids);
        let words = match noise {
            Some(n) => n.apply(&words),
            None => words,
        };
        self.forward_words(&words, mask, train)
    }

    /// As [`Embeddings::forward`], from word embeddings `[N, T, H]` (Hugging Face's `inputs_embeds`).
    pub fn forward_words(&self, words: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let (n, t) = (words.size()[0], words.size()[1]);
        let device = words.device();
        let position_ids = match self.positions {
            Positions::FromZero => Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0).expand([n, t], true),
            Positions::AfterPadding { padding_idx } => {
                // From the mask rather than from `ids == pad`: identical for padded batches, and independent of
                // how a pruned vocabulary renumbers the pad token.
                let m = mask.to_kind(Kind::Int64);
                m.cumsum(1, Kind::Int64) * &m + padding_idx
            }
        };
        let token_type = Tensor::zeros([n, t], (Kind::Int64, device));
        let x = words + self.position.forward(&position_ids) + self.token_type.forward(&token_type);
        self.norm.forward(&x).dropout(self.dropout, train)
    }

    /// The word-embedding table `[rows, H]`: what the input noise is added to, row by row.
    pub fn word_table(&self) -> &Tensor {
        &self.word.ws
    }

    /// Rows of the word table (the vocabulary it holds).
    pub fn word_rows(&self) -> i64 {
        self.word.ws.size()[0]
    }
}

fn layer_norm(p: &nn::Path, config: &EncoderConfig) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![config.hidden_size],
        nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() },
    )
}

/// The additive attention bias of a `[N, T]` padding mask: 0 for tokens, the most negative f32 for padding
/// (Hugging Face's `finfo.min`), shaped `[N, 1, 1, T]`.
pub fn attention_bias(mask: &Tensor) -> Tensor {
    ((mask.to_kind(Kind::Float).neg() + 1.0) * f64::from(f32::MIN)).unsqueeze(1).unsqueeze(1)
}

/// One post-LayerNorm Transformer block (`encoder.layer.{i}`).
#[derive(Debug)]
pub struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    out_norm: nn::LayerNorm,
    heads: i64,
    act: Activation,
    hidden_dropout: f64,
    attn_dropout: f64,
}

impl Layer {
    pub fn new(p: &nn::Path, config: &EncoderConfig) -> Self {
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        let lin = |q: nn::Path, i, o| nn::linear(q, i, o, Default::default());
        let att = p / "attention";
        Self {
            query: lin(&att / "self" / "query", h, h),
            key: lin(&att / "self" / "key", h, h),
            value: lin(&att / "self" / "value", h, h),
            attn_out: lin(&att / "output" / "dense", h, h),
            attn_norm: layer_norm(&(&att / "output" / "LayerNorm"), config),
            intermediate: lin(p / "intermediate" / "dense", h, ff),
            output: lin(p / "output" / "dense", ff, h),
            out_norm: layer_norm(&(p / "output" / "LayerNorm"), config),
            heads: config.num_attention_heads,
            act: config.hidden_act,
            hidden_dropout: config.hidden_dropout_prob,
            attn_dropout: config.attention_probs_dropout_prob,
        }
    }

    /// `[N, T, H]` → `[N, T, H]`; `bias` from [`attention_bias`].
    pub fn forward(&self, x: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        self.forward_queries(x, x, bias, train)
    }

    /// The output at the first token only, `[N, 1, H]`: the first token attends to every token, but the query,
    /// attention output and feed-forward run for it alone. Equal to `forward(..).narrow(1, 0, 1)` (up to dropout
    /// masks), at about a sixth of the cost: what a first-token classifier needs from its last layer.
    pub fn forward_first_token(&self, x: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        self.forward_queries(&x.narrow(1, 0, 1), x, bias, train)
    }

    /// Attention of the tokens `queries` (`[N, Q, H]`) over `x` (`[N, T, H]`), then the feed-forward block.
    fn forward_queries(&self, queries: &Tensor, x: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        let (n, t, h) = x.size3().expect("[N, T, H] hidden states");
        let nq = queries.size()[1];
        let d = h / self.heads;
        let split = |y: Tensor, len: i64| y.view([n, len, self.heads, d]).transpose(1, 2);
        let q = split(self.query.forward(queries), nq);
        let k = split(self.key.forward(x), t);
        let v = split(self.value.forward(x), t);
        let scores = q.matmul(&k.transpose(-1, -2)) / (d as f64).sqrt() + bias;
        let probs = scores.softmax(-1, Kind::Float).dropout(self.attn_dropout, train);
        let context = probs.matmul(&v).transpose(1, 2).contiguous().view([n, nq, h]);
        let a = self.attn_out.forward(&context).dropout(self.hidden_dropout, train);
        let x = self.attn_norm.forward(&(a + queries));
        let f =
            self.output.forward(&self.act.apply(&self.intermediate.forward(&x))).dropout(self.hidden_dropout, train);
        self.out_norm.forward(&(f + x))
    }
}

/// Optionally the embeddings, then a run of consecutive layers `first..first + layers.len()`: the whole encoder,
/// its frozen prefix, or its top layers. Variables are named as in Hugging Face's `BertModel` under the path given.
#[derive(Debug)]
pub struct EncoderStack {
    pub embeddings: Option<Embeddings>,
    pub layers: Vec<Layer>,
    pub first: usize,
}

impl EncoderStack {
    /// Builds `embeddings` (if asked, with `word_rows` rows) and the layers `range` under `p`.
    pub fn new(p: &nn::Path, config: &EncoderConfig, embeddings: bool, range: Range<usize>, word_rows: i64) -> Self {
        let embeddings = embeddings.then(|| Embeddings::new(&(p / "embeddings"), config, word_rows));
        let first = range.start;
        let layers = range.map(|i| Layer::new(&(p / "encoder" / "layer" / i), config)).collect();
        Self { embeddings, layers, first }
    }

    /// The layers on hidden states `x` (`[N, T, H]`) with padding `mask` `[N, T]`.
    pub fn run_layers(&self, x: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let bias = attention_bias(mask);
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            x = layer.forward(&x, &bias, train);
        }
        x
    }

    /// As [`EncoderStack::run_layers`], but the last layer computes the first token only: `[N, H]`.
    pub fn run_layers_first_token(&self, x: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let Some((last, below)) = self.layers.split_last() else { return x.select(1, 0) };
        let bias = attention_bias(mask);
        let mut x = x.shallow_clone();
        for layer in below {
            x = layer.forward(&x, &bias, train);
        }
        last.forward_first_token(&x, &bias, train).select(1, 0)
    }

    /// Embeddings then layers (the stack must hold the embeddings).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, noise: Option<&InputNoise>, train: bool) -> Tensor {
        let emb = self.embeddings.as_ref().expect("an encoder stack without embeddings takes hidden states");
        self.run_layers(&emb.forward(ids, mask, noise, train), mask, train)
    }
}

/// Mean over real tokens of `[N, T, H]` hidden states (`mask` `[N, T]`, 1 = token): e5's sentence embedding.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(hidden.kind()).unsqueeze(-1);
    (hidden * &m).sum_dim_intlist(1, false, hidden.kind()) / m.sum_dim_intlist(1, false, hidden.kind()).clamp_min(1.0)
}

/// The weights of a Hugging Face snapshot, renamed to `prefix.` + the `BertModel` names (`embeddings.*`,
/// `encoder.layer.*`), whatever prefix the file used (`roberta.`, `bert.` or none); `classifier.*` keys are kept
/// as they are; pooler, language-model head and position-id buffers are dropped. LayerNorm `gamma`/`beta` (old
/// checkpoints) become `weight`/`bias`.
pub fn read_snapshot_weights(dir: &Path, prefix: &str) -> Result<HashMap<String, Tensor>> {
    let file = snapshot_weights_file(dir)?;
    let tensors = tram_task::kit::weights::read_safetensors(&file)?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (key, t) in tensors {
        let base = key.strip_prefix("roberta.").or_else(|| key.strip_prefix("bert.")).unwrap_or(&key);
        if base.starts_with("pooler.")
            || base.starts_with("lm_head.")
            || base.starts_with("cls.")
            || base.ends_with("position_ids")
        {
            continue;
        }
        let base = base.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias");
        let name = if base.starts_with("classifier.") { base } else { format!("{prefix}.{base}") };
        out.insert(name, t);
    }
    Ok(out)
}
