//! Our EfficientNet-Lite0 against the PyPI reference `efficientnet-lite-pytorch==0.1.0` with the shipped
//! ImageNet weights, on real images (fixture from reference/efficientnet_lite_fixtures.py). Needs the assets:
//! `bash tools/assets.sh`.

use std::collections::HashMap;

use tch::{nn, Device, Kind, Tensor};
use tram_vision::assets;
use tram_vision::efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/efficientnet_lite0.safetensors");
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn to_input(pixels: &Tensor) -> Tensor {
    pixels.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 127.5 - 1.0
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn pretrained(config: EfficientNetLiteConfig) -> (nn::VarStore, EfficientNetLite) {
    let weights = assets::efficientnet_lite0_weights().unwrap_or_else(|e| panic!("{e}"));
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite::new(&vs.root(), config);
    net.load_pretrained(&vs, &weights).unwrap();
    (vs, net)
}

#[test]
fn eval_logits_match_the_reference() {
    let fx = fixture();
    let (_vs, net) = pretrained(EfficientNetLiteConfig::lite0_imagenet());
    for size in [224, 64] {
        let x = to_input(&fx[&format!("pixels_{size}")]);
        let logits = tch::no_grad(|| net.forward_t(&x, false));
        let d = max_diff(&logits, &fx[&format!("logits_{size}")]);
        println!("{size} px: max |Δlogit| = {d:.3e}");
        assert!(d < 1e-4, "{size} px: max |Δlogit| = {d}");
    }
}

#[test]
fn train_mode_batch_statistics_match_the_reference() {
    let fx = fixture();
    let config = EfficientNetLiteConfig { dropout: 0.0, drop_connect: 0.0, ..EfficientNetLiteConfig::lite0_imagenet() };
    let (vs, net) = pretrained(config);
    let x = to_input(&fx["pixels_64"]);
    let logits = tch::no_grad(|| net.forward_t(&x, true));
    let d = max_diff(&logits, &fx["logits_train_64"]);
    println!("train mode: max |Δlogit| = {d:.3e}");
    assert!(d < 1e-4, "train mode: max |Δlogit| = {d}");
    let vars = vs.variables();
    for key in ["_bn1.running_mean", "_blocks.15._bn2.running_var"] {
        let d = max_diff(&vars[key], &fx[&format!("train_64.{key}")]);
        assert!(d < 1e-5, "{key} after one train forward: max |Δ| = {d}");
    }
}

#[test]
fn a_new_head_keeps_the_backbone_and_has_the_new_shape() {
    let fx = fixture();
    let (vs, net) = pretrained(EfficientNetLiteConfig::lite0(9));
    let x = to_input(&fx["pixels_64"]);
    let logits = tch::no_grad(|| net.forward_t(&x, false));
    assert_eq!(logits.size(), [4, 9]);
    let vars = vs.variables();
    assert_eq!(vars["_fc.weight"].size(), [9, 1280]);
    // The backbone is the ImageNet one: the stem matches the file.
    let file: HashMap<String, Tensor> =
        Tensor::read_safetensors(assets::efficientnet_lite0_weights().unwrap()).unwrap().into_iter().collect();
    assert_eq!(max_diff(&vars["_conv_stem.weight"], &file["_conv_stem.weight"]), 0.0);
    // 296 tensors in the file: 49 `num_batches_tracked` are not ours, the 2 of the ImageNet head are replaced.
    assert_eq!(vars.len(), 296 - 49);
    let params: i64 = vars.values().filter(|t| t.requires_grad()).map(|t| t.numel() as i64).sum();
    assert_eq!(params, 4_652_008 - 1280 * 1000 - 1000 + 1280 * 9 + 9);
}

#[test]
fn a_wrong_file_names_the_key() {
    let dir = std::env::temp_dir().join(format!("tram-vision-badweights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.safetensors");
    Tensor::write_safetensors(
        &[("_conv_stem.weight", Tensor::zeros([32, 3, 5, 5], (Kind::Float, Device::Cpu)))],
        &path,
    )
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite::new(&vs.root(), EfficientNetLiteConfig::lite0_imagenet());
    let err = net.load_pretrained(&vs, &path).unwrap_err().to_string();
    assert!(err.contains("_conv_stem.weight") && err.contains("[32, 3, 5, 5]"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
