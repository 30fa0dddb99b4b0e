//! The one step-timing loop: every method steps once per round on the same batch, so that machine noise hits all
//! methods alike, and the medians are compared.

use std::time::Duration;

use tram_core::{Model, OptimizerConfig, StepDriver};

use crate::error::Result;
use tram_stats::median;

use crate::result::Timing;

/// Median step time of each configuration over `rounds` interleaved rounds after `warmup` rounds (allocators,
/// caches), all on one `model` (each driver keeps its own state) and one step's `batch`. On CUDA every step is
/// synchronised before its time is read.
pub fn time_interleaved<M: Model>(
    model: &M,
    batch: &[M::Batch],
    configs: &[OptimizerConfig],
    warmup: usize,
    rounds: usize,
    mut on_step: impl FnMut(),
) -> Result<Vec<Timing>> {
    let device = model.var_store().device();
    let mut drivers = configs
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.schedule = c.schedule.with_total_steps_if_unset((warmup + rounds + 1) as u64);
            StepDriver::new(model, c)
        })
        .collect::<tram_core::Result<Vec<_>>>()?;
    let mut totals = vec![Vec::with_capacity(rounds); configs.len()];
    let mut shares = vec![Vec::with_capacity(rounds); configs.len()];
    let mut passes = vec![(0u32, 0u32); configs.len()];
    for round in 0..warmup + rounds {
        for (k, driver) in drivers.iter_mut().enumerate() {
            let report = driver.step(model, batch)?;
            if let tch::Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
            if round >= warmup {
                let t = driver.last_timing();
                totals[k].push(t.total);
                shares[k].push(t.optimizer_share());
            }
            passes[k] = (report.forward_passes, report.backward_passes);
            on_step();
        }
    }
    Ok(configs
        .iter()
        .enumerate()
        .map(|(k, c)| Timing {
            method: c.method.clone(),
            median_ms: median(&totals[k].iter().map(Duration::as_secs_f64).collect::<Vec<_>>()) * 1e3,
            optimizer_share: median(&shares[k]),
            forward_passes: passes[k].0,
            backward_passes: passes[k].1,
            extra_memory_bytes: drivers[k].extra_memory_bytes(),
            param_bytes: drivers[k].param_bytes(),
        })
        .collect())
}
