//! ImageNet zero-shot on emoji of everyday objects with the shipped EfficientNet-Lite0 weights (needs
//! `bash tools/assets.sh`). Chance is 5/1000 per image (≈ 0.1 of 19); the Python reference gets 16/19 on the
//! Apple and Facebook styles and 9/19 on Google and Twitter.

use tch::{nn, Device};
use tram_vision::assets;
use tram_vision::data::emoji::Style;
use tram_vision::efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig};
use tram_vision::zero_shot::imagenet_top_k;

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

#[test]
fn realistic_styles_are_recognised_far_above_chance() {
    let _rng = serial();
    let weights = assets::efficientnet_lite0_weights().unwrap_or_else(|e| panic!("{e}"));
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite::new(&vs.root(), EfficientNetLiteConfig::lite0_imagenet());
    net.load_pretrained(&vs, &weights).unwrap();
    let mut hits = std::collections::HashMap::new();
    for style in Style::ALL {
        let r = imagenet_top_k(&net, style, 5, Device::Cpu).unwrap();
        println!("{:>8}: {}/{} in the top 5; missed {:?}", style.as_str(), r.hits, r.total, r.misses);
        hits.insert(style, r.hits);
    }
    for style in [Style::Apple, Style::Facebook] {
        assert!(hits[&style] >= 12, "{}: only {}/19", style.as_str(), hits[&style]);
    }
    // The flat styles sit further from ImageNet's photographs.
    assert!(hits[&Style::Apple] + hits[&Style::Facebook] > hits[&Style::Google] + hits[&Style::Twitter] + 6);
    // A network without the weights is at chance.
    let vs = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(0);
    let random = EfficientNetLite::new(&vs.root(), EfficientNetLiteConfig::lite0_imagenet());
    let r = imagenet_top_k(&random, Style::Apple, 5, Device::Cpu).unwrap();
    assert!(r.hits <= 2, "random weights: {}/19", r.hits);
}
