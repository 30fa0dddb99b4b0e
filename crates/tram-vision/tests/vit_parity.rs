//! Our ViT against Hugging Face `transformers` on a tiny random ViT saved in the google/vit-base-patch16-224
//! layout (fixture from reference/vit_fixtures.py).

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Device, Tensor};
use tram_vision::vit::{Vit, VitConfig};

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-vit");

fn fixture() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(Path::new(DIR).join("fixture.safetensors")).unwrap().into_iter().collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn load(num_classes: i64) -> (nn::VarStore, Vit) {
    let config = VitConfig::from_dir(Path::new(DIR)).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = Vit::new(&vs.root(), config, num_classes);
    vit.load_pretrained(&vs, Path::new(DIR)).unwrap();
    (vs, vit)
}

#[test]
fn logits_match_transformers() {
    let _rng = serial();
    let fx = fixture();
    let (_vs, vit) = load(5);
    let logits = tch::no_grad(|| vit.forward_t(&fx["pixel_values"], false));
    let d = max_diff(&logits, &fx["logits"]);
    println!("tiny ViT, 32 px: max |Δlogit| = {d:.3e}");
    assert!(d < 1e-4, "max |Δlogit| = {d}");
    // Another input size: interpolated position embeddings.
    let logits = tch::no_grad(|| vit.forward_t(&fx["pixel_values_48"], false));
    let d = max_diff(&logits, &fx["logits_48"]);
    println!("tiny ViT, 48 px (interpolated positions): max |Δlogit| = {d:.3e}");
    assert!(d < 1e-4, "48 px: max |Δlogit| = {d}");
}

#[test]
fn a_new_head_replaces_the_classifier_only() {
    let _rng = serial();
    let fx = fixture();
    let (vs, vit) = load(7);
    let logits = tch::no_grad(|| vit.forward_t(&fx["pixel_values"], false));
    assert_eq!(logits.size(), [3, 7]);
    let file: HashMap<String, Tensor> =
        Tensor::read_safetensors(Path::new(DIR).join("model.safetensors")).unwrap().into_iter().collect();
    let vars = vs.variables();
    assert_eq!(vars.len(), file.len());
    for (k, v) in &file {
        if k.starts_with("classifier.") {
            assert_ne!(vars[k].size(), v.size());
        } else {
            assert_eq!(max_diff(&vars[k], v), 0.0, "{k}");
        }
    }
}

#[test]
fn training_mode_gives_gradients_to_every_parameter() {
    let _rng = serial();
    let fx = fixture();
    let (vs, vit) = load(5);
    let loss = vit.forward_t(&fx["pixel_values"], true).cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 1, 2]));
    loss.backward();
    for (k, v) in vs.variables() {
        let g = v.grad();
        assert!(g.defined() && g.abs().sum(tch::Kind::Float).double_value(&[]) > 0.0, "{k} has no gradient");
    }
}
