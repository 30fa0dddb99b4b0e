//! The domains' text as token streams: the training domain's, cut into whole blocks, and the evaluation sets'
//! blocks (its validation and test sets, then each zero-shot domain's test set).

use std::path::Path;

use tram_task::{hash_unit, Domain, Split};

use super::config::{CausalLmConfig, LmData};
use crate::causal_lm::PretrainedLm;
use crate::data::brown::{self, Brown};
use crate::data::m2d2::{self, M2d2Split};
use crate::error::{Error, Result};

/// One evaluation set: blocks of token ids.
pub(super) struct EvalSet {
    pub name: String,
    pub domain: Domain,
    pub split: Split,
    pub blocks: Vec<Vec<u32>>,
    /// Tokens of the set's whole text (before sampling blocks).
    pub tokens: usize,
}

/// What a task trains and evaluates on.
pub(super) struct Corpus {
    /// Training blocks, each `block_len` tokens, concatenated.
    pub train: Vec<u32>,
    /// Validation, in-domain test, zero-shot tests.
    pub sets: Vec<EvalSet>,
}

/// Reads and tokenizes the configured domains (errors name the file or key).
pub(super) fn load(config: &CausalLmConfig, lm: &PretrainedLm) -> Result<Corpus> {
    let (mut train, sets) = match &config.data {
        LmData::Brown => brown(config, lm)?,
        LmData::M2d2(root) => m2d2(config, lm, root)?,
    };
    if train.len() < config.block_len {
        return Err(Error::Config(format!(
            "causal-lm: the training domain `{}` has {} tokens, less than one block of {}",
            config.train_domain,
            train.len(),
            config.block_len
        )));
    }
    train.truncate(train.len() / config.block_len * config.block_len);
    Ok(Corpus { train, sets })
}

fn zero_shot_domains(config: &CausalLmConfig, all: Vec<String>) -> Result<Vec<String>> {
    let zs = config.zero_shot_domains.clone().unwrap_or_else(|| all.clone());
    for d in &zs {
        if d == &config.train_domain {
            return Err(Error::Config(format!("causal-lm: `{d}` is the training domain, not a zero-shot one")));
        }
    }
    Ok(zs)
}

fn brown(config: &CausalLmConfig, lm: &PretrainedLm) -> Result<(Vec<u32>, Vec<EvalSet>)> {
    let corpus = Brown::embedded()?;
    let known = |g: &str| brown::group(g).is_some();
    if !known(&config.train_domain) {
        return Err(Error::Config(format!(
            "causal-lm: train_domain `{}` is not a Brown genre (one of: {})",
            config.train_domain,
            brown::GENRES.map(|(g, _)| g).join(", ")
        )));
    }
    let others: Vec<String> =
        brown::GENRES.iter().map(|(g, _)| g.to_string()).filter(|g| g != &config.train_domain).collect();
    let zero_shot = zero_shot_domains(config, others)?;
    if let Some(g) = zero_shot.iter().find(|g| !known(g)) {
        return Err(Error::Config(format!("causal-lm: zero-shot domain `{g}` is not a Brown genre")));
    }
    let encode = |texts: &[&str]| stream(lm, texts);
    let (mut train, mut valid, mut test) = (vec![], vec![], vec![]);
    for d in corpus.genre(&config.train_domain) {
        let u = hash_unit(config.split_seed, d.id.as_bytes());
        let part = if u < config.test_fraction {
            &mut test
        } else if u < config.test_fraction + config.valid_fraction {
            &mut valid
        } else {
            &mut train
        };
        part.push(d.text.as_str());
    }
    for (what, docs) in [("validation", &valid), ("test", &test)] {
        if docs.is_empty() {
            return Err(Error::Config(format!(
                "causal-lm: no {what} files of `{}` under split_seed {}: raise valid_fraction / test_fraction",
                config.train_domain, config.split_seed
            )));
        }
    }
    let mut sets = vec![
        set(config, &config.train_domain, Domain::InDomain, Split::Validation, encode(&valid)?),
        set(config, &config.train_domain, Domain::InDomain, Split::Test, encode(&test)?),
    ];
    for g in &zero_shot {
        let docs: Vec<&str> = corpus.genre(g).map(|d| d.text.as_str()).collect();
        sets.push(set(config, g, Domain::ZeroShot, Split::Test, encode(&docs)?));
    }
    Ok((encode(&train)?, sets))
}

fn m2d2(config: &CausalLmConfig, lm: &PretrainedLm, root: &Path) -> Result<(Vec<u32>, Vec<EvalSet>)> {
    let default = m2d2::paper_zero_shot(&config.train_domain).ok_or_else(|| {
        Error::Config(format!(
            "causal-lm: `{}` is not one of the paper's M2D2 L1 training domains; list zero_shot_domains",
            config.train_domain
        ))
    });
    let zero_shot = match &config.zero_shot_domains {
        Some(_) => zero_shot_domains(config, vec![])?,
        None => zero_shot_domains(config, default?)?,
    };
    let read = |config: &str, split: M2d2Split, cap: Option<usize>| -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut chunk: Vec<String> = Vec::new();
        let mut failure = None;
        let mut flush = |chunk: &mut Vec<String>, out: &mut Vec<u32>| -> bool {
            let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match stream(lm, &texts) {
                Ok(ids) => {
                    if !out.is_empty() {
                        out.push(lm.separator);
                    }
                    out.extend(ids);
                }
                Err(e) => failure = Some(e),
            }
            chunk.clear();
            failure.is_none() && cap.is_none_or(|c| out.len() < c)
        };
        m2d2::for_each_example(root, config, split, |line| {
            chunk.push(line.to_string());
            chunk.len() < 4096 || flush(&mut chunk, &mut out)
        })?;
        if !chunk.is_empty() {
            flush(&mut chunk, &mut out);
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(c) = cap {
            out.truncate(c);
        }
        Ok(out)
    };
    let train = read(&config.train_domain, M2d2Split::Train, config.max_train_tokens)?;
    let mut sets = vec![
        set(
            config,
            &config.train_domain,
            Domain::InDomain,
            Split::Validation,
            read(&config.train_domain, M2d2Split::Valid, None)?,
        ),
        set(
            config,
            &config.train_domain,
            Domain::InDomain,
            Split::Test,
            read(&config.train_domain, M2d2Split::Test, None)?,
        ),
    ];
    for d in &zero_shot {
        sets.push(set(config, d, Domain::ZeroShot, Split::Test, read(d, M2d2Split::Test, None)?));
    }
    Ok((train, sets))
}

/// Non-overlapping blocks of a set's token stream (the last one shorter, if at least two tokens are left),
/// `eval_blocks` / `validation_blocks` of them spread evenly.
fn set(config: &CausalLmConfig, name: &str, domain: Domain, split: Split, stream: Vec<u32>) -> EvalSet {
    let all: Vec<Vec<u32>> = stream.chunks(config.block_len).filter(|b| b.len() >= 2).map(<[u32]>::to_vec).collect();
    let k = if split == Split::Validation { config.validation_blocks } else { config.eval_blocks };
    let blocks = if k == 0 || k >= all.len() {
        all
    } else {
        (0..k).map(|i| all[(2 * i + 1) * all.len() / (2 * k)].clone()).collect()
    };
    EvalSet { name: name.to_string(), domain, split, blocks, tokens: stream.len() }
}

/// Texts tokenized and joined by the model's document separator.
fn stream(lm: &PretrainedLm, texts: &[&str]) -> Result<Vec<u32>> {
    let encodings = lm.tokenizer.encode_batch(texts, false)?;
    let mut out = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum());
    for (i, ids) in encodings.iter().enumerate() {
        if i > 0 {
            out.push(lm.separator);
        }
        out.extend_from_slice(ids);
    }
    Ok(out)
}
