//! Input noise x + z for TRAM-x, TRAM-Fisher and R3F. The model decides where x is (pixels or patch
//! embeddings for vision, token embeddings for text) and calls [`InputNoise::apply`] there.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{config_err, Result};

/// Distribution of z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// z ~ N(0, σ²), the paper's choice (Eq. 5).
    #[default]
    Gaussian,
    /// z ~ U(−σ, σ), as the released code and fairseq's R3F also allow.
    Uniform,
}

/// σ and the distribution of the noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseSpec {
    pub sigma: f64,
    #[serde(default)]
    pub kind: NoiseKind,
    /// σ is a multiple of the noised tensor's scale until the step driver resolves it
    /// ([`crate::Method::with_noise_scale`]); [`InputNoise::apply`] always sees an absolute σ.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relative: bool,
}

impl NoiseSpec {
    pub fn gaussian(sigma: f64) -> Self {
        Self { sigma, kind: NoiseKind::Gaussian, relative: false }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(config_err(format!("noise sigma must be finite and >= 0, got {}", self.sigma)));
        }
        Ok(())
    }
}

/// Root mean square of `t`'s entries, accumulated in float64: the scale [`crate::Model::noise_scale`] reports
/// for a tensor noise is added to (e.g. a token-embedding table).
pub fn rms(t: &Tensor) -> f64 {
    tch::no_grad(|| t.square().mean(tch::Kind::Double).sqrt().double_value(&[]))
}

/// Root mean square of the rows of `t` `[N, T, H]` whose `mask` `[N, T]` is non-zero (padding left out).
pub fn masked_rms(t: &Tensor, mask: &Tensor) -> f64 {
    tch::no_grad(|| {
        let m = mask.to_kind(tch::Kind::Double).unsqueeze(-1);
        let sum = (t.to_kind(tch::Kind::Double).square() * &m).sum(tch::Kind::Double);
        let count = m.sum(tch::Kind::Double) * t.size().last().copied().unwrap_or(1) as f64;
        (sum / count).sqrt().double_value(&[])
    })
}

/// One draw of input noise, as the step driver hands it to [`crate::Model::forward`].
///
/// The draw is seeded: `apply` seeds torch's generator with `seed`, samples z, then reseeds it with
/// `resume_seed`, the seed the driver gave the clean forward of the same micro-batch. Dropout after the
/// noised layer therefore draws the same masks as in the clean pass, and the divergence measures the
/// effect of z alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNoise {
    pub spec: NoiseSpec,
    pub seed: i64,
    pub resume_seed: i64,
}

impl InputNoise {
    /// x + z, with z drawn in x's shape, dtype and device.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        tch::manual_seed(self.seed);
        let z = match self.spec.kind {
            NoiseKind::Gaussian => x.randn_like() * self.spec.sigma,
            NoiseKind::Uniform => (x.rand_like() * 2.0 - 1.0) * self.spec.sigma,
        };
        tch::manual_seed(self.resume_seed);
        x + z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_and_masked_rms_match_closed_forms() {
        // Entries 3 and 4: mean square 12.5.
        let t = Tensor::from_slice(&[3.0f32, -4.0, 4.0, 3.0]).reshape([2, 2]);
        assert!((rms(&t) - 12.5f64.sqrt()).abs() < 1e-12);
        // [N=1, T=3, H=2]: the padded row (100s) is left out, the others have mean square (1+1+4+4)/4 = 2.5.
        let h = Tensor::from_slice(&[1.0f32, -1.0, 2.0, 2.0, 100.0, 100.0]).reshape([1, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0]).reshape([1, 3]);
        assert!((masked_rms(&h, &mask) - 2.5f64.sqrt()).abs() < 1e-12);
    }
}
