//! The arithmetic of a model's passes.
//!
//! Whatever the precision, the parameters (master weights), their gradients, the base optimizer's state, ε, the
//! trust-region distance d, the restore and the update are float32. With `bf16` or `fp16`, each forward pass of
//! a step (pass 1, the target's forward, pass 2, the regularisers' forwards) and its loss run inside a region
//! of libtorch's own autocast ([`tram_native::Autocast`]): the dispatcher runs matmuls, linear layers and
//! convolutions in the reduced type and keeps the ops its policy lists in float32 (losses on every device;
//! softmax, log-softmax and norms on CUDA), exactly as `torch.autocast` does; each backward then runs every op
//! in the type its forward used. One region per pass, so the cache of casted weights never outlives a change
//! of θ (the ascent, the restore, the swap to the target's parameters). Divergences upcast to float32.
//!
//! `fp16` adds dynamic loss scaling with PyTorch's `GradScaler` rules (scale 2¹⁶, ×½ on overflow, ×2 after
//! 2,000 steps without one), one scale for every pass of a step: the scaled loss of each pass is backpropagated,
//! its gradients are unscaled before they are used (for ε, and for the descent), and an overflow in any pass
//! skips the whole step (θ, the buffers and the optimizer state as they were) and halves the scale.
//!
//! `tf32` keeps float32 tensors and lets CUDA's matmuls and convolutions round their inputs to TF32.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};
use tram_native::Autocast;

use crate::error::{config_err, Result};

/// How the model's passes compute (the `precision` key of a profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// IEEE float32 throughout.
    #[default]
    Fp32,
    /// float32 tensors, TF32 matmuls and convolutions (CUDA only).
    Tf32,
    /// bfloat16 autocast, float32 master weights (CPUs with AVX-512 BF16 or AMX, NVIDIA GPUs from Ampere on).
    Bf16,
    /// float16 autocast with dynamic loss scaling, float32 master weights (GPUs without bfloat16).
    Fp16,
}

impl Precision {
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The reduced type of the passes, if any.
    pub fn reduced(self) -> Option<Kind> {
        match self {
            Precision::Fp32 | Precision::Tf32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// An autocast region for one pass (or one evaluation) on `device`; `None` in float32 and TF32.
    pub fn autocast(self, device: Device) -> Option<Autocast> {
        self.reduced().and_then(|kind| Autocast::enter(device, kind))
    }

    /// Refuses what `device` cannot run, and sets the process's TF32 switch to this precision (the last driver
    /// built decides: a sweep runs one precision).
    pub fn prepare(self, device: Device) -> Result<()> {
        match self {
            Precision::Tf32 if !device.is_cuda() => {
                return Err(config_err(
                    "precision = \"tf32\" is a CUDA matmul mode; on the CPU use \"fp32\" or \"bf16\"",
                ))
            }
            Precision::Bf16 | Precision::Fp16 if self.autocast(device).is_none() => {
                return Err(config_err(format!("libtorch's autocast refuses precision {self:?} on {device:?}")));
            }
            _ => {}
        }
        if device.is_cuda() && !tram_native::set_tf32(self == Precision::Tf32) {
            return Err(config_err("libtorch refused to switch TF32"));
        }
        Ok(())
    }
}

/// fp16's dynamic loss scale, with PyTorch's `GradScaler` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LossScale {
    pub scale: f64,
    /// Steps since the last overflow (or growth).
    pub good_steps: u32,
}

impl LossScale {
    const INITIAL: f64 = 65536.0;
    const GROWTH_INTERVAL: u32 = 2000;
    /// Below this, fp16 cannot hold the gradients at any useful scale.
    pub const FLOOR: f64 = 1.0 / 65536.0;

    pub fn for_precision(precision: Precision) -> Option<Self> {
        (precision == Precision::Fp16).then_some(Self { scale: Self::INITIAL, good_steps: 0 })
    }

    /// An overflow: the step was skipped; halve the scale.
    pub fn overflowed(&mut self) {
        self.scale *= 0.5;
        self.good_steps = 0;
    }

    /// A step without overflow: double the scale after every `GROWTH_INTERVAL` of them.
    pub fn stepped(&mut self) {
        self.good_steps += 1;
        if self.good_steps == Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            precision: Precision,
        }
        let p: P = serde_json::from_str("{}").unwrap();
        assert_eq!(p.precision, Precision::Fp32);
        for (name, want) in [("fp32", Precision::Fp32), ("tf32", Precision::Tf32), ("bf16", Precision::Bf16)] {
            let p: P = serde_json::from_str(&format!("{{\"precision\": \"{name}\"}}")).unwrap();
            assert_eq!(p.precision, want);
        }
        assert!(serde_json::from_str::<P>("{\"precision\": \"fp8\"}").is_err());
        assert_eq!(Precision::Fp16.reduced(), Some(Kind::Half));
        assert!(Precision::Fp32.autocast(Device::Cpu).is_none());
        let err = Precision::Tf32.prepare(Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("CUDA matmul mode"), "{err}");
        Precision::Bf16.prepare(Device::Cpu).unwrap();
    }

    #[test]
    fn loss_scale_follows_grad_scaler() {
        assert_eq!(LossScale::for_precision(Precision::Bf16), None);
        let mut s = LossScale::for_precision(Precision::Fp16).unwrap();
        assert_eq!(s.scale, 65536.0);
        s.overflowed();
        assert_eq!(s.scale, 32768.0);
        for _ in 0..1999 {
            s.stepped();
        }
        assert_eq!(s.scale, 32768.0);
        s.stepped();
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
    }
}
