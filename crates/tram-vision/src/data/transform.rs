//! Preprocessing: resize (eval) or random-resized-crop and flip (train), then per-channel normalisation, to a
//! `[3, S, S]` float array in channel-major order.

use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

use super::{Rgb, SplitMix64};

/// Per-channel `(x / 255 − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Normalization {
    /// [-1, 1]: EfficientNet-Lite, and ViT-B/16's Hugging Face preprocessor.
    pub const MINUS_ONE_ONE: Normalization = Normalization { mean: [0.5; 3], std: [0.5; 3] };
}

/// Training-time augmentation (torchvision's RandomResizedCrop and RandomHorizontalFlip).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip: f64,
}

impl Augment {
    /// Checks the ranges: a crop's area fraction `0 < lo ≤ hi ≤ 1`, an aspect ratio `0 < lo ≤ hi`, a flip
    /// probability in `[0, 1]` (torchvision's RandomResizedCrop warns on a reversed range and samples anyway).
    pub fn validate(&self) -> Result<(), String> {
        let (s, r) = (self.scale, self.ratio);
        if !(s.0 > 0.0 && s.0 <= s.1 && s.1 <= 1.0) {
            return Err(format!("augment.scale = [{}, {}]: need 0 < low <= high <= 1", s.0, s.1));
        }
        if !(r.0 > 0.0 && r.0 <= r.1 && r.1.is_finite()) {
            return Err(format!("augment.ratio = [{}, {}]: need 0 < low <= high", r.0, r.1));
        }
        if !(0.0..=1.0).contains(&self.flip) {
            return Err(format!("augment.flip = {}: a probability, in [0, 1]", self.flip));
        }
        Ok(())
    }
}

impl Default for Augment {
    /// Milder than ImageNet's (0.08, 1): an emoji is a single centred object on 64 px.
    fn default() -> Self {
        Self { scale: (0.35, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0), flip: 0.5 }
    }
}

/// What turns a decoded image into network input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Output side in pixels.
    pub size: u32,
    pub normalization: Normalization,
    /// `None`: resize the whole image to size × size (evaluation).
    pub augment: Option<Augment>,
}

impl Transform {
    pub fn eval(size: u32, normalization: Normalization) -> Self {
        Self { size, normalization, augment: None }
    }

    pub fn train(size: u32, normalization: Normalization, augment: Augment) -> Self {
        Self { size, normalization, augment: Some(augment) }
    }

    /// The crop, resize and flip of one image, before normalisation.
    pub fn pixels(&self, img: &Rgb, rng: &mut SplitMix64) -> Rgb {
        let s = self.size;
        let Some(aug) = self.augment else {
            return resize(img, s);
        };
        let (x, y, w, h) = random_resized_crop_box(img.width(), img.height(), aug, rng);
        let crop = imageops::crop_imm(img, x, y, w, h).to_image();
        let mut out = resize(&crop, s);
        if rng.uniform() < aug.flip {
            imageops::flip_horizontal_in_place(&mut out);
        }
        out
    }

    /// Appends the normalised `[3, size, size]` values of `img` to `out`.
    pub fn apply_into(&self, img: &Rgb, rng: &mut SplitMix64, out: &mut Vec<f32>) {
        let px = self.pixels(img, rng);
        let n = (self.size * self.size) as usize;
        let raw = px.as_raw();
        for c in 0..3 {
            let (m, sd) = (self.normalization.mean[c], self.normalization.std[c]);
            out.extend((0..n).map(|i| ((raw[3 * i + c] as f64 / 255.0 - m) / sd) as f32));
        }
    }
}

fn resize(img: &Rgb, size: u32) -> Rgb {
    if img.width() == size && img.height() == size {
        return img.clone();
    }
    imageops::resize(img, size, size, FilterType::Triangle)
}

/// torchvision's RandomResizedCrop box: ten tries at a random area and aspect ratio, else a central crop.
fn random_resized_crop_box(width: u32, height: u32, aug: Augment, rng: &mut SplitMix64) -> (u32, u32, u32, u32) {
    let area = (width * height) as f64;
    let (lr0, lr1) = (aug.ratio.0.ln(), aug.ratio.1.ln());
    for _ in 0..10 {
        let target = area * (aug.scale.0 + rng.uniform() * (aug.scale.1 - aug.scale.0));
        let ratio = (lr0 + rng.uniform() * (lr1 - lr0)).exp();
        let w = (target * ratio).sqrt().round() as u32;
        let h = (target / ratio).sqrt().round() as u32;
        if w > 0 && h > 0 && w <= width && h <= height {
            let x = rng.below((width - w + 1) as usize) as u32;
            let y = rng.below((height - h + 1) as usize) as u32;
            return (x, y, w, h);
        }
    }
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side, side)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Rgb {
        Rgb::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 200]))
    }

    #[test]
    fn eval_resizes_and_normalises_to_minus_one_one() {
        let t = Transform::eval(32, Normalization::MINUS_ONE_ONE);
        let mut out = vec![];
        t.apply_into(&gradient(64, 64), &mut SplitMix64(0), &mut out);
        assert_eq!(out.len(), 3 * 32 * 32);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Blue is constant 200 → 200 / 127.5 − 1.
        let blue = &out[2 * 32 * 32..];
        assert!(blue.iter().all(|v| (v - (200.0 / 127.5 - 1.0)).abs() < 1e-6));
        // Red grows left to right, green top to bottom.
        assert!(out[31] > out[0] && out[32 * 32 + 31 * 32] > out[32 * 32]);
    }

    #[test]
    fn augmentation_is_seeded_and_varies() {
        let t = Transform::train(32, Normalization::MINUS_ONE_ONE, Augment::default());
        let img = gradient(64, 64);
        let run = |seed| {
            let mut out = vec![];
            t.apply_into(&img, &mut SplitMix64(seed), &mut out);
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        for seed in 0..200 {
            let mut rng = SplitMix64(seed);
            let (x, y, w, h) = random_resized_crop_box(64, 48, Augment::default(), &mut rng);
            assert!(x + w <= 64 && y + h <= 48 && w > 0 && h > 0);
        }
    }

    #[test]
    fn flip_probability_one_mirrors_the_image() {
        let aug = Augment { scale: (1.0, 1.0), ratio: (1.0, 1.0), flip: 1.0 };
        let t = Transform::train(64, Normalization::MINUS_ONE_ONE, aug);
        let img = gradient(64, 64);
        let out = t.pixels(&img, &mut SplitMix64(3));
        assert_eq!(out.get_pixel(0, 5), img.get_pixel(63, 5));
    }

    #[test]
    fn augmentation_ranges_are_checked() {
        assert_eq!(Augment::default().validate(), Ok(()));
        let bad = |a: Augment, what: &str| assert!(a.validate().unwrap_err().contains(what), "{a:?}");
        bad(Augment { flip: 1.5, ..Augment::default() }, "augment.flip = 1.5");
        bad(Augment { scale: (1.0, 0.35), ..Augment::default() }, "augment.scale = [1, 0.35]");
        bad(Augment { scale: (0.0, 1.0), ..Augment::default() }, "augment.scale");
        bad(Augment { ratio: (1.3, 0.75), ..Augment::default() }, "augment.ratio");
    }
}
