//! What configures training with one method: the method, the base optimizer, the schedule, and how the steps run.

use serde::{Deserialize, Serialize};

use crate::base::BaseConfig;
use crate::error::{config_err, Result};
use crate::method::MethodConfig;
use crate::precision::Precision;
use crate::schedule::LrSchedule;

/// Consecutive non-finite steps tolerated before [`crate::Error::NonFinite`], unless configured.
pub const DEFAULT_MAX_CONSECUTIVE_SKIPS: u32 = 5;

/// Everything that configures training with one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub method: MethodConfig,
    pub base: BaseConfig,
    pub schedule: LrSchedule,
    /// Clip the descent gradient to this global L2 norm (before the base step only; the ascent is normalised).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// m-sharpness: one ascent per micro-batch (of size m) instead of one for the whole step.
    #[serde(default)]
    pub m_sharpness: bool,
    /// Fail after this many consecutive steps with a non-finite loss or gradient (each one is skipped).
    #[serde(default = "default_max_consecutive_skips")]
    pub max_consecutive_skips: u32,
    /// Seed of the per-step randomness (dropout, input noise).
    #[serde(default)]
    pub seed: u64,
    /// The arithmetic of the model's passes (default float32); see [`Precision`].
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
}

fn default_max_consecutive_skips() -> u32 {
    DEFAULT_MAX_CONSECUTIVE_SKIPS
}

impl OptimizerConfig {
    pub fn new(method: MethodConfig, base: BaseConfig, schedule: LrSchedule) -> Self {
        Self {
            method,
            base,
            schedule,
            clip_grad_norm: None,
            m_sharpness: false,
            max_consecutive_skips: DEFAULT_MAX_CONSECUTIVE_SKIPS,
            seed: 0,
            precision: Precision::Fp32,
        }
    }

    /// Refuses what [`crate::StepDriver::new`] would refuse without needing the model (the method, the base optimizer,
    /// the schedule, clipping, the skip limit), so that a runner can check a whole sweep before its first step.
    pub fn validate(&self) -> Result<()> {
        self.method.build()?;
        self.base.validate()?;
        self.schedule.validate()?;
        if let Some(c) = self.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(config_err(format!("clip_grad_norm must be > 0, got {c}")));
            }
        }
        if self.max_consecutive_skips == 0 {
            return Err(config_err("max_consecutive_skips must be at least 1"));
        }
        Ok(())
    }
}
