//! Encoder parity with transformers 5.24 on tiny random checkpoints (reference/xl_fixtures.py): XLM-R's
//! RoBERTa positions and sequence-classification head, BERT's positions from 0, padding masked; and the frozen
//! prefix with its cached output giving the logits of the whole model.

use std::path::PathBuf;
use std::rc::Rc;

use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};
use tram_core::Model;
use tram_text::classifier::{load_weights, FrozenPrefix, Pooling, SequenceClassifier, TextBatch};
use tram_text::encoder::{read_snapshot_weights, EncoderConfig, EncoderStack};
use tram_text::trainable::NoiseAt;

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xl")
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<Vec<i64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect()
}

fn floats(v: &Value) -> Tensor {
    fn flat(v: &Value, out: &mut Vec<f32>, shape: &mut Vec<i64>, depth: usize) {
        match v {
            Value::Array(a) => {
                if shape.len() == depth {
                    shape.push(a.len() as i64);
                }
                for x in a {
                    flat(x, out, shape, depth + 1);
                }
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut out, mut shape) = (vec![], vec![]);
    flat(v, &mut out, &mut shape, 0);
    Tensor::from_slice(&out).view(shape.as_slice())
}

fn batch(fx: &Value, pad: i64) -> TextBatch {
    let ids = ints(&fx["ids"]);
    let rows: Vec<&[i64]> = ids.iter().map(|r| r.as_slice()).collect();
    let mut b = TextBatch::from_ids(&rows, &vec![0; rows.len()], pad, Device::Cpu);
    b.mask = Tensor::from_slice(&ints(&fx["mask"]).concat()).view([ids.len() as i64, -1]);
    b
}

/// max |a − b| over the real (unpadded) tokens of `[N, T, H]` states.
fn max_diff_tokens(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    ((a - b).abs() * m).max().double_value(&[])
}

#[test]
fn xlm_roberta_matches_transformers() {
    let _rng = serial();
    let dir = fixtures().join("tiny-xlmr");
    let config = EncoderConfig::from_dir(&dir).unwrap();
    assert_eq!(config.base_prefix(), "roberta");
    let tensors = read_snapshot_weights(&dir, config.base_prefix()).unwrap();
    let fx = json("xlmr_parity.json");
    let b = batch(&fx, config.pad_token_id.unwrap());
    let model = SequenceClassifier::new(
        &config,
        3,
        Pooling::First,
        NoiseAt::Embeddings,
        None,
        config.vocab_size,
        0,
        Device::Cpu,
    );
    load_weights(&tensors, "tiny-xlmr", &[model.var_store()], true).unwrap();
    let hidden = tch::no_grad(|| model.hidden(&b, false, None));
    let dh = max_diff_tokens(&hidden, &floats(&fx["hidden"]), &b.mask);
    let logits = tch::no_grad(|| model.forward(&b, false, None));
    let dl = (&logits - floats(&fx["logits"])).abs().max().double_value(&[]);
    println!("tiny XLM-R: max |Δ hidden| {dh:.2e}, max |Δ logits| {dl:.2e}");
    assert!(dh < 1e-5, "hidden states differ by {dh}");
    assert!(dl < 1e-5, "logits differ by {dl}");
    // The first-token representation is what the head reads.
    let rep = model.representation(&b);
    let first = floats(&fx["hidden"]).select(1, 0);
    assert!((rep - first).abs().max().double_value(&[]) < 1e-5);

    // Without the checkpoint's head, a new one is drawn from the seed: same seed, same head; other seed, other.
    let fresh = |seed| {
        let m = SequenceClassifier::new(
            &config,
            3,
            Pooling::First,
            NoiseAt::Embeddings,
            None,
            config.vocab_size,
            seed,
            Device::Cpu,
        );
        load_weights(&tensors, "tiny-xlmr", &[m.var_store()], false).unwrap();
        tch::no_grad(|| m.forward(&b, false, None))
    };
    let (a, a2, c) = (fresh(7), fresh(7), fresh(8));
    assert_eq!((&a - &a2).abs().max().double_value(&[]), 0.0);
    assert!((&a - &c).abs().max().double_value(&[]) > 1e-4);
    assert!((&a - &logits).abs().max().double_value(&[]) > 1e-4, "the new head is not the checkpoint's");
}

#[test]
fn bert_positions_start_at_zero() {
    // The stack draws its initial weights from torch's generator: not while another test re-seeds it.
    let _rng = serial();
    let dir = fixtures().join("tiny-bert");
    let config = EncoderConfig::from_dir(&dir).unwrap();
    assert_eq!(config.base_prefix(), "bert");
    let tensors = read_snapshot_weights(&dir, "bert").unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let stack = EncoderStack::new(&(vs.root() / "bert"), &config, true, 0..config.num_hidden_layers, config.vocab_size);
    load_weights(&tensors, "tiny-bert", &[&vs], false).unwrap();
    let fx = json("bert_parity.json");
    let b = batch(&fx, 0);
    let hidden = tch::no_grad(|| stack.forward(&b.ids, &b.mask, None, false));
    let d = max_diff_tokens(&hidden, &floats(&fx["hidden"]), &b.mask);
    println!("tiny BERT (gelu_new): max |Δ hidden| {d:.2e}");
    assert!(d < 1e-5, "hidden states differ by {d}");
}

#[test]
fn frozen_prefix_and_its_cache_give_the_full_models_logits() {
    let _rng = serial();
    let dir = fixtures().join("tiny-xlmr");
    let config = EncoderConfig::from_dir(&dir).unwrap();
    let tensors = read_snapshot_weights(&dir, config.base_prefix()).unwrap();
    let fx = json("xlmr_parity.json");
    let b = batch(&fx, 1);
    let full = SequenceClassifier::new(
        &config,
        3,
        Pooling::Mean,
        NoiseAt::Embeddings,
        None,
        config.vocab_size,
        5,
        Device::Cpu,
    );
    load_weights(&tensors, "tiny-xlmr", &[full.var_store()], false).unwrap();
    let prefix = Rc::new(FrozenPrefix::new(&config, 2, config.vocab_size, Device::Cpu));
    let top = SequenceClassifier::new(
        &config,
        3,
        Pooling::Mean,
        NoiseAt::Embeddings,
        Some(prefix.clone()),
        config.vocab_size,
        5,
        Device::Cpu,
    );
    load_weights(&tensors, "tiny-xlmr", &[top.var_store(), prefix.var_store()], false).unwrap();
    assert_eq!(top.first_trainable_layer(), 2);
    assert!(prefix.var_store().variables().values().all(|t| !t.requires_grad()), "the prefix is frozen");
    let trainable: Vec<String> = top.var_store().variables().into_keys().collect();
    assert!(trainable.iter().all(|k| k.starts_with("classifier.") || k.starts_with("roberta.encoder.layer.2.")));
    let want = tch::no_grad(|| full.forward(&b, false, None));
    let got_live = tch::no_grad(|| top.forward(&b, false, None));
    let mut cached = batch(&fx, 1);
    cached.prefix_out = Some(prefix.forward(&cached.ids, &cached.mask, None));
    let got_cached = tch::no_grad(|| top.forward(&cached, false, None));
    let d1 = (&want - &got_live).abs().max().double_value(&[]);
    let d2 = (&want - &got_cached).abs().max().double_value(&[]);
    println!("top-1 layer with frozen prefix: max |Δ logits| live {d1:.2e}, cached {d2:.2e}");
    assert!(d1 < 1e-6 && d2 < 1e-6, "{d1} {d2}");
}
