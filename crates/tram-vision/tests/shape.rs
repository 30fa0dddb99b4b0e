//! `tram plan`'s parameter counts (tram_vision::shape) against the classifiers this crate builds: the fixture's
//! tiny ViT, the embedded EfficientNet-Lite0 (`bash tools/assets.sh vision` for the emoji classes), and
//! ViT-B/16 by its published size from the built-in Hub configuration.

use std::path::{Path, PathBuf};

use tch::Device;
use tram_core::Model;
use tram_vision::classifier::{ImageClassifier, ModelSpec};
use tram_vision::transfer::{DataSpec, TransferConfig};

/// Parameters (batch norm's running statistics are buffers, not parameters).
fn built(spec: &ModelSpec, classes: i64) -> u64 {
    let model = ImageClassifier::build(spec, classes, Device::Cpu).unwrap();
    model.var_store().trainable_variables().iter().map(|t| t.numel() as u64).sum()
}

fn on(model: ModelSpec, data: &str) -> TransferConfig {
    let data =
        DataSpec::ImageFolder { train: PathBuf::from(data), test: "/nowhere/test".into(), ood: Default::default() };
    TransferConfig { model, data, image_size: 224, ..TransferConfig::embedded() }
}

#[test]
fn vit_counts_equal_the_built_classifier() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-vit");
    let spec = ModelSpec::Vit { dir, pretrained: false };
    // A folder named as a known set gives its classes (CIFAR-100's 100).
    let shape = on(spec.clone(), "/nowhere/cifar100").shape().unwrap();
    assert_eq!((shape.total_params, shape.trained_params), (built(&spec, 100), built(&spec, 100)));
    assert!(shape.caveat.is_none());
}

#[test]
fn vit_b16_has_its_published_size() {
    let spec = ModelSpec::Vit { dir: "/path/to/vit-base-patch16-224".into(), pretrained: true };
    let shape = on(spec, "/path/to/hub-dataset-folder").shape().unwrap();
    // ViTForImageClassification with google/vit-base-patch16-224's 1000-class head, as transformers counts it;
    // the data's classes are unknown here, and the plan says which head it assumed.
    assert_eq!(shape.total_params, 86_567_656);
    assert!(shape.caveat.unwrap().contains("1000-class head assumed"));
    assert!(shape.description.contains("built-in Hugging Face configuration of vit-base-patch16-224"));
}

#[test]
fn efficientnet_lite0_counts_equal_the_built_classifier() {
    let task = TransferConfig::embedded();
    let shape = task.shape().unwrap();
    let classes = task.data.load().unwrap().classes.len() as i64;
    assert_eq!(shape.total_params, built(&task.model, classes));
}
