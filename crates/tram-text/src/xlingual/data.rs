//! What the cross-lingual task reads once: the pre-trained encoder's files (config, tokenizer, weights) and the
//! data sets, tokenized, in a vocabulary pruned to the ids they use.

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Tensor};
use tram_task::{Domain, Split};

use super::config::{CrossLingualConfig, EncoderSpec, XlData};
use crate::classifier::{TextBatch, VocabPruning};
use crate::data::install_guide::{self, GuideSplit, SplitSpec};
use crate::data::nli;
use crate::e5s1::{self, E5s1};
use crate::encoder::{read_snapshot_weights, EncoderConfig, Positions};
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;

/// One tokenized example: ids in the model's (possibly pruned) vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub label: i64,
}

/// A named set of encoded examples and how it reports.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The language (`en`, `de`, ...): the table's column.
    pub name: String,
    pub domain: Domain,
    pub split: Split,
    pub examples: Vec<Encoded>,
}

/// The pre-trained encoder's files, opened: its config, its tokenizer (truncating to what the task and the
/// positions allow), where its weights come from, and the text put before every input.
pub(super) struct EncoderFiles {
    pub config: EncoderConfig,
    pub tokenizer: TextTokenizer,
    weights: WeightSource,
    pub text_prefix: String,
}

enum WeightSource {
    E5(Box<E5s1>),
    Snapshot(PathBuf),
}

impl EncoderFiles {
    pub fn open(config: &CrossLingualConfig) -> Result<Self> {
        let (encoder, tokenizer, weights, default_prefix) = match &config.model {
            EncoderSpec::E5Small { file, charsmap } => {
                let file = match file {
                    Some(f) => f.clone(),
                    None => e5s1::default_model_path()?,
                };
                let charsmap = match charsmap {
                    Some(c) => c.clone(),
                    None => e5s1::default_charsmap_path()?,
                };
                let e5 = E5s1::open(&file)?;
                let tok = e5.text_tokenizer(&charsmap)?;
                (e5.config(), tok, WeightSource::E5(Box::new(e5)), "query: ")
            }
            EncoderSpec::HuggingFace { dir } => {
                let config = EncoderConfig::from_dir(dir)?;
                let tok = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
                (config, tok, WeightSource::Snapshot(dir.clone()), "")
            }
        };
        let tokenizer = tokenizer.with_truncation(config.max_seq_len.min(max_input_len(&encoder)))?;
        let text_prefix = config.text_prefix.clone().unwrap_or_else(|| default_prefix.to_string());
        Ok(Self { config: encoder, tokenizer, weights, text_prefix })
    }

    /// The pre-trained weights under Hugging Face names (the word embedding cut to `pruning`'s rows), on the CPU,
    /// and the file they came from.
    pub fn weights(&self, pruning: Option<&VocabPruning>) -> Result<(HashMap<String, Tensor>, String)> {
        let base = self.config.base_prefix();
        let rows = pruning.map(|p| p.kept.as_slice());
        Ok(match &self.weights {
            WeightSource::E5(e5) => (e5.bert_weights(base, rows)?, e5.path().display().to_string()),
            WeightSource::Snapshot(dir) => {
                let mut w = read_snapshot_weights(dir, base)?;
                let key = format!("{base}.embeddings.word_embeddings.weight");
                if let (Some(rows), Some(word)) = (rows, w.get(&key)) {
                    let pruned = word.index_select(0, &Tensor::from_slice(rows));
                    w.insert(key, pruned);
                }
                (w, dir.join("model.safetensors").display().to_string())
            }
        })
    }
}

/// The longest input the position table allows (RoBERTa's positions start after the padding index).
fn max_input_len(config: &EncoderConfig) -> usize {
    let offset = match config.positions() {
        Positions::FromZero => 0,
        Positions::AfterPadding { padding_idx } => padding_idx + 1,
    };
    (config.max_position_embeddings - offset).max(1) as usize
}

/// Raw (text, label) examples of one set before tokenization.
enum Texts {
    Single(Vec<(String, i64)>),
    Pairs(Vec<(String, String, i64)>),
}

/// One set before tokenization.
struct RawSet {
    name: String,
    domain: Domain,
    split: Split,
    texts: Texts,
}

/// The data sets as read.
pub(super) struct RawData {
    /// Class names, in label order.
    pub classes: Vec<String>,
    train: Texts,
    /// Evaluated after every epoch: English validation, then every test set (English first).
    eval_sets: Vec<RawSet>,
    /// The other languages' validation sets (Table 6).
    other_validation: Vec<RawSet>,
    /// One line on what was read, for logs.
    pub summary: String,
    /// What was left out of the files, and why.
    pub skipped: Vec<String>,
}

impl RawData {
    pub fn read(data: &XlData) -> Result<Self> {
        match data {
            XlData::InstallGuide { dir, languages, min_chars, test_fraction, validation_fraction, split_seed } => {
                if !(0.0..1.0).contains(test_fraction)
                    || !(0.0..1.0).contains(validation_fraction)
                    || test_fraction + validation_fraction >= 1.0
                {
                    return Err(Error::Config(format!(
                        "test_fraction ({test_fraction}) and validation_fraction ({validation_fraction}) must be \
                         in [0, 1) and leave a training part"
                    )));
                }
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => install_guide::default_dir()?,
                };
                let split = SplitSpec {
                    test_fraction: *test_fraction,
                    validation_fraction: *validation_fraction,
                    seed: *split_seed,
                };
                let langs: Vec<String> = if languages.is_empty() {
                    install_guide::LANGUAGES.iter().map(|s| s.to_string()).collect()
                } else {
                    languages.clone()
                };
                Ok(Self::install_guide(&GuideSplit::load(&dir, &langs, *min_chars, split)?, &langs))
            }
            XlData::Xnli { multinli, xnli, languages, max_train_examples } => {
                Self::xnli(multinli, xnli, languages, *max_train_examples)
            }
        }
    }

    fn install_guide(g: &GuideSplit, langs: &[String]) -> Self {
        let single = |v: &[install_guide::GuideExample]| {
            Texts::Single(v.iter().map(|e| (e.text.clone(), e.label as i64)).collect())
        };
        let set = |name: &str, domain, split, texts| RawSet { name: name.to_string(), domain, split, texts };
        let mut eval_sets = vec![
            set("en", Domain::InDomain, Split::Validation, single(&g.validation["en"])),
            set("en", Domain::InDomain, Split::Test, single(&g.test["en"])),
        ];
        let mut other_validation = vec![];
        for lang in langs.iter().filter(|l| *l != "en") {
            eval_sets.push(set(lang, Domain::ZeroShot, Split::Test, single(&g.test[lang])));
            other_validation.push(set(lang, Domain::ZeroShot, Split::Validation, single(&g.validation[lang])));
        }
        Self {
            classes: install_guide::CLASSES.iter().map(|s| s.to_string()).collect(),
            train: single(&g.train),
            eval_sets,
            other_validation,
            summary: format!("installation guide: {}", g.describe()),
            skipped: vec![],
        }
    }

    fn xnli(
        multinli: &std::path::Path,
        xnli: &std::path::Path,
        languages: &[String],
        max_train_examples: Option<usize>,
    ) -> Result<Self> {
        let mut skipped = vec![];
        let mut train = nli::read(&nli::multinli_files(multinli, "train")?)?;
        if train.dropped_unlabelled > 0 {
            skipped.push(format!(
                "{}: {} training pairs without a gold label (-1)",
                multinli.display(),
                train.dropped_unlabelled
            ));
        }
        if let Some(n) = max_train_examples {
            train.examples.truncate(n);
        }
        let pairs = |s: nli::NliSplit| {
            Texts::Pairs(s.examples.into_iter().map(|e| (e.premise, e.hypothesis, e.label)).collect())
        };
        let set = |name: &str, domain, split, texts| RawSet { name: name.to_string(), domain, split, texts };
        let ntrain = train.examples.len();
        let mut eval_sets = vec![];
        let mut other_validation = vec![];
        let mut langs = languages.to_vec();
        if !langs.iter().any(|l| l == "en") {
            langs.insert(0, "en".into());
        }
        langs.sort_by_key(|l| l != "en");
        let mut sizes = vec![];
        for lang in &langs {
            let val = nli::read(&nli::xnli_files(xnli, lang, "validation")?)?;
            let test = nli::read(&nli::xnli_files(xnli, lang, "test")?)?;
            sizes.push(format!("{lang} val {} test {}", val.examples.len(), test.examples.len()));
            if lang == "en" {
                eval_sets.insert(0, set("en", Domain::InDomain, Split::Validation, pairs(val)));
                eval_sets.insert(1, set("en", Domain::InDomain, Split::Test, pairs(test)));
            } else {
                eval_sets.push(set(lang, Domain::ZeroShot, Split::Test, pairs(test)));
                other_validation.push(set(lang, Domain::ZeroShot, Split::Validation, pairs(val)));
            }
        }
        Ok(Self {
            classes: nli::NLI_CLASSES.iter().map(|s| s.to_string()).collect(),
            train: pairs(nli::NliSplit { examples: train.examples, ..Default::default() }),
            eval_sets,
            other_validation,
            summary: format!("MultiNLI train {ntrain}; XNLI {}", sizes.join(", ")),
            skipped,
        })
    }
}

/// Every set tokenized: ids in the model's vocabulary, or in the pruned one after [`Examples::prune`].
pub(super) struct Examples {
    pub train: Vec<Encoded>,
    /// Evaluated after every epoch: English validation, then every test set (English first).
    pub eval_sets: Vec<EvalSet>,
    /// Validation sets of the other languages (Table 6), not evaluated during training.
    pub other_validation: Vec<EvalSet>,
}

impl Examples {
    /// Tokenizes every set with `files`' tokenizer, `files.text_prefix` before each input.
    pub fn encode(raw: &RawData, files: &EncoderFiles) -> Result<Self> {
        let prefix = &files.text_prefix;
        let encode = |t: &Texts| -> Result<Vec<Encoded>> {
            let encoded = |ids: Vec<u32>, label: i64| Encoded { ids: ids.into_iter().map(i64::from).collect(), label };
            match t {
                Texts::Single(v) => v
                    .iter()
                    .map(|(s, l)| Ok(encoded(files.tokenizer.encode(&format!("{prefix}{s}"), true)?, *l)))
                    .collect(),
                Texts::Pairs(v) => v
                    .iter()
                    .map(|(a, b, l)| Ok(encoded(files.tokenizer.encode_pair(&format!("{prefix}{a}"), b)?, *l)))
                    .collect(),
            }
        };
        let sets = |sets: &[RawSet]| -> Result<Vec<EvalSet>> {
            sets.iter()
                .map(|s| {
                    Ok(EvalSet { name: s.name.clone(), domain: s.domain, split: s.split, examples: encode(&s.texts)? })
                })
                .collect()
        };
        Ok(Self {
            train: encode(&raw.train)?,
            eval_sets: sets(&raw.eval_sets)?,
            other_validation: sets(&raw.other_validation)?,
        })
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Encoded> {
        self.train
            .iter_mut()
            .chain(self.eval_sets.iter_mut().flat_map(|s| &mut s.examples))
            .chain(self.other_validation.iter_mut().flat_map(|s| &mut s.examples))
    }

    /// Keeps only the word-embedding rows of the ids the sets use (and the specials), renumbering every example:
    /// the same outputs from a smaller model. Returns the pruning (if `prune`) and the padding row.
    pub fn prune(&mut self, prune: bool, files: &EncoderFiles) -> Result<(Option<VocabPruning>, i64)> {
        let specials: Vec<i64> = ["<s>", "<pad>", "</s>", "<unk>", "[CLS]", "[SEP]", "[PAD]", "[UNK]"]
            .iter()
            .filter_map(|t| files.tokenizer.token_id(t))
            .map(i64::from)
            .collect();
        let pad_original = files.config.pad_token_id.unwrap_or(0);
        let pruning = prune.then(|| {
            let used: Vec<i64> = self.all_mut().flat_map(|e| e.ids.iter().copied()).collect();
            let mut always = specials.clone();
            always.push(pad_original);
            VocabPruning::new(used, &always)
        });
        if let Some(p) = &pruning {
            for e in self.all_mut() {
                p.remap(&mut e.ids)?;
            }
        }
        let vocab = files.config.vocab_size;
        if let Some(bad) = self.train.iter().flat_map(|e| &e.ids).find(|&&id| id >= vocab) {
            return Err(Error::Config(format!("token id {bad} outside the model's vocabulary of {vocab}")));
        }
        let pad = pruning.as_ref().map_or(Some(pad_original), |p| p.row(pad_original)).unwrap_or(0);
        Ok((pruning, pad))
    }
}

/// The pre-trained encoder as the task keeps it.
pub(super) struct Pretrained {
    pub config: EncoderConfig,
    /// Weights under Hugging Face names (pruned word embedding), on the CPU.
    pub weights: HashMap<String, Tensor>,
    /// The file they came from, for errors and logs.
    pub origin: String,
    pub pruning: Option<VocabPruning>,
    /// The padding token's row.
    pub pad: i64,
}

impl Pretrained {
    /// Rows of the word embedding (fewer than the vocabulary when pruned).
    pub fn word_rows(&self) -> i64 {
        self.pruning.as_ref().map_or(self.config.vocab_size, |p| p.rows())
    }

    /// Examples `idx` of `examples` as a padded batch on `device` (no cached prefix).
    pub fn batch(&self, examples: &[Encoded], idx: &[usize], device: Device) -> TextBatch {
        let rows: Vec<&[i64]> = idx.iter().map(|&i| examples[i].ids.as_slice()).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| examples[i].label).collect();
        TextBatch::from_ids(&rows, &labels, self.pad, device)
    }

    /// Batches of `set` on `device`, in set order, `batch_size` examples each (no cached prefix).
    pub fn batches(&self, set: &EvalSet, batch_size: usize, device: Device) -> Vec<TextBatch> {
        let idx: Vec<usize> = (0..set.examples.len()).collect();
        idx.chunks(batch_size.max(1)).map(|c| self.batch(&set.examples, c, device)).collect()
    }
}

/// Indices of `examples` sorted by length (longest first), so that batches pad little.
pub(super) fn length_order(examples: &[Encoded]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(examples[i].ids.len()), i));
    order
}
