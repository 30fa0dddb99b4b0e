//! Learning-rate schedules. The step driver asks the schedule for the rate of every step and hands it to
//! the base optimizer, so the schedule drives the descent, never the ascent radius.

use serde::{Deserialize, Serialize};

use crate::error::{config_err, Result};

/// Shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// Half a cosine from the base rate down to `end_lr` at `total_steps` (no restarts).
    Cosine,
    /// Straight line down to `end_lr` at `total_steps`.
    Linear,
    /// `end + (base - end) * (1 - progress)^power`, the Hugging Face polynomial decay.
    Polynomial { power: f64 },
}

/// A learning-rate schedule: linear warmup from 0, then a decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    pub base_lr: f64,
    #[serde(default = "default_decay")]
    pub decay: Decay,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Length of the schedule in steps, which every decay but `constant` needs. `None` until the run's length
    /// is known: whoever knows it fills it in once with [`LrSchedule::with_total_steps_if_unset`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(default)]
    pub end_lr: f64,
}

fn default_decay() -> Decay {
    Decay::Constant
}

impl LrSchedule {
    pub fn constant(base_lr: f64) -> Self {
        Self { base_lr, decay: Decay::Constant, warmup_steps: 0, total_steps: None, end_lr: 0.0 }
    }

    /// Cosine decay to 0 over the run; give its length with [`LrSchedule::with_total_steps`] or
    /// [`LrSchedule::with_total_steps_if_unset`].
    pub fn cosine(base_lr: f64) -> Self {
        Self { base_lr, decay: Decay::Cosine, warmup_steps: 0, total_steps: None, end_lr: 0.0 }
    }

    pub fn with_warmup(mut self, warmup_steps: u64) -> Self {
        self.warmup_steps = warmup_steps;
        self
    }

    pub fn with_total_steps(mut self, total_steps: u64) -> Self {
        self.total_steps = Some(total_steps);
        self
    }

    /// The schedule with `total_steps` set to the run's length unless the config already gave one.
    pub fn with_total_steps_if_unset(mut self, run_steps: u64) -> Self {
        self.total_steps.get_or_insert(run_steps);
        self
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr >= 0.0) {
            return Err(config_err(format!("learning rate must be finite and >= 0, got {}", self.base_lr)));
        }
        if !(self.end_lr.is_finite() && self.end_lr >= 0.0) {
            return Err(config_err(format!("end_lr must be finite and >= 0, got {}", self.end_lr)));
        }
        if let Decay::Polynomial { power } = self.decay {
            if !(power.is_finite() && power > 0.0) {
                return Err(config_err(format!("polynomial decay power must be > 0, got {power}")));
            }
        }
        if self.decay != Decay::Constant {
            let Some(total_steps) = self.total_steps else {
                return Err(config_err(format!(
                    "a {:?} schedule needs the run's length: set total_steps, or have the task fill it in \
                     (LrSchedule::with_total_steps_if_unset)",
                    self.decay
                )));
            };
            if total_steps <= self.warmup_steps {
                return Err(config_err(format!(
                    "a {:?} schedule needs total_steps ({total_steps}) greater than warmup_steps ({})",
                    self.decay, self.warmup_steps
                )));
            }
        }
        Ok(())
    }

    /// The rate for step `t` (0-based): warmup reaches the base rate at step `warmup_steps - 1`.
    ///
    /// # Panics
    /// For a decay without `total_steps`, which [`LrSchedule::validate`] rejects.
    pub fn lr(&self, t: u64) -> f64 {
        if t < self.warmup_steps {
            return self.base_lr * (t + 1) as f64 / self.warmup_steps as f64;
        }
        let (base, end) = (self.base_lr, self.end_lr);
        if self.decay == Decay::Constant {
            return base;
        }
        let total_steps = self.total_steps.expect("a decaying schedule needs total_steps (see LrSchedule::validate)");
        let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((t - self.warmup_steps) as f64 / span).clamp(0.0, 1.0);
        match self.decay {
            Decay::Constant => base,
            Decay::Cosine => end + (base - end) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => end + (base - end) * (1.0 - progress),
            Decay::Polynomial { power } => end + (base - end) * (1.0 - progress).powf(power),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule::cosine(1.0).with_total_steps(110).with_warmup(10);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        assert!(s.lr(500).abs() < 1e-12);
    }

    #[test]
    fn polynomial_and_linear_agree_at_power_one() {
        let lin =
            LrSchedule { base_lr: 2e-5, decay: Decay::Linear, warmup_steps: 100, total_steps: Some(1000), end_lr: 0.0 };
        let poly = LrSchedule { decay: Decay::Polynomial { power: 1.0 }, ..lin.clone() };
        for t in [0, 50, 99, 100, 400, 999, 1000] {
            assert!((lin.lr(t) - poly.lr(t)).abs() < 1e-18, "step {t}");
        }
        assert!((lin.lr(550) - 1e-5).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!(LrSchedule::constant(-1.0).validate().is_err());
        assert!(LrSchedule::cosine(0.1).with_total_steps(5).with_warmup(5).validate().is_err());
        assert!(LrSchedule::constant(0.1).validate().is_ok());
        let err = LrSchedule::cosine(0.1).validate().unwrap_err().to_string();
        assert!(err.contains("needs the run's length"), "{err}");
    }

    #[test]
    fn the_run_length_is_filled_in_once() {
        let unset: LrSchedule = toml::from_str("base_lr = 0.1\ndecay = { kind = \"cosine\" }").unwrap();
        assert_eq!(unset.total_steps, None);
        assert_eq!(unset.clone().with_total_steps_if_unset(200).total_steps, Some(200));
        let given = unset.with_total_steps(50);
        assert_eq!(given.clone().with_total_steps_if_unset(200).total_steps, Some(50));
        assert!(given.validate().is_ok());
    }
}
