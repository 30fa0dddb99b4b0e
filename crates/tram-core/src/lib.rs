//! # tram-core
//!
//! TRAM (Trust Region Aware Minimization, Sherborne et al., ICLR 2024, arXiv 2310.03646 v2) and the optimizers
//! it is compared with, on tch. The family is four small pieces and a step driver:
//!
//! - [`ascent`]: perturbation rules (SAM, ASAM, Fisher-SAM, TRAM's Eq. 7);
//! - [`method::Target`] and [`noise`]: what the trust region is measured against (θ_{t−1}, θ_0, an EMA, x + z);
//! - [`divergence`]: KL forward/reverse/symmetric, L2, MMD, with an explicit reduction;
//! - [`base`] and [`schedule`]: SGD, Adam, AdamW with saveable state, and learning-rate schedules;
//! - [`method`]: one registry row per method of the paper ([`method::METHODS`]) and the config that resolves a
//!   name into those pieces;
//! - [`step::StepDriver`]: runs one step of any [`method::Method`] against any [`Model`], counting its passes, in
//!   float32 or mixed precision ([`precision`]).
//!
//! ```no_run
//! # use tram_core::*;
//! # fn demo<M: Model>(model: &M, batches: Vec<M::Batch>) -> Result<()> {
//! let method = MethodConfig::new(MethodName::TramPrev);
//! let config = OptimizerConfig::new(method, BaseConfig::sgd(), LrSchedule::constant(0.01));
//! let mut driver = StepDriver::new(model, config)?;
//! for batch in batches {
//!     let report = driver.step(model, std::slice::from_ref(&batch))?;
//!     println!("loss {:.4} d {:?}", report.loss, report.divergence);
//! }
//! # Ok(()) }
//! ```

pub mod ascent;
pub mod base;
mod checkpoint;
pub mod config;
pub mod divergence;
pub mod error;
pub mod method;
pub mod model;
pub mod noise;
pub mod precision;
pub mod report;
pub mod schedule;
pub mod step;
pub mod testing;

pub use ascent::{Ascent, TramEps};
pub use base::{BaseConfig, BaseOptimizer};
pub use config::{OptimizerConfig, DEFAULT_MAX_CONSECUTIVE_SKIPS};
pub use divergence::{Divergence, DivergenceKind, Reduction};
pub use error::{Error, Result};
pub use method::{Description, Method, MethodConfig, MethodInfo, MethodName, Role, Target, TargetMode, TrustRegion};
pub use model::Model;
pub use noise::{masked_rms, rms, InputNoise, NoiseKind, NoiseSpec};
pub use precision::Precision;
pub use report::{StepReport, StepTiming};
pub use schedule::{Decay, LrSchedule};
pub use step::{forward_seed, StepDriver};
