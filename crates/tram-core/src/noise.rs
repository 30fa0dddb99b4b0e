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
