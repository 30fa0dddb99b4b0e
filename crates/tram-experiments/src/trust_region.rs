//! Each method's trust-region distance d and perturbation norm ‖ε‖ over training (arXiv 2310.03646 v2 Eq. 6–7;
//! SAM's ‖ε‖ is its ρ): the median over seeds at every step, read back from the runs' `steps.csv`. A transfer
//! table writes them as `<stem>-trust-region.csv` and draws them beside its plot (`plot::trust_region_plot`):
//! whether a method's d stays small (TRAM-θ_{t−1}, whose d is the last update's effect) or starts outside the
//! region (TRAM-x at a large σ) shows at a glance.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

use crate::atomic;
use crate::summary::{runs_of, Summary};

/// One method entry's medians: `(step, median over the runs that measured it there)`, finite values only.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub method_id: String,
    /// Runs whose `steps.csv` was read.
    pub runs: usize,
    pub divergence: Vec<(u64, f64)>,
    pub eps_norm: Vec<(u64, f64)>,
}

impl Curve {
    /// Whether the method measures either quantity (the base optimizer measures neither).
    pub fn measures(&self) -> bool {
        !self.divergence.is_empty() || !self.eps_norm.is_empty()
    }
}

/// `(step, divergence, eps_norm)` of one step; an empty cell (a method that does not measure it) or a non-finite one
/// (a diverging step) is `None`.
type StepRow = (u64, Option<f64>, Option<f64>);

/// The rows of one run's `steps.csv`.
fn read_steps(path: &Path) -> Result<Vec<StepRow>> {
    let df = atomic::read_csv(path)?;
    let column = |name: &str| -> Result<Vec<Option<f64>>> {
        let c = df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
        Ok(c.cast(&DataType::Float64)?.f64()?.into_iter().map(|v| v.filter(|v| v.is_finite())).collect())
    };
    let steps = df.column("step").with_context(|| format!("{}: no column `step`", path.display()))?;
    let steps: Vec<Option<u64>> = steps.cast(&DataType::UInt64)?.u64()?.into_iter().collect();
    let (d, eps) = (column("divergence")?, column("eps_norm")?);
    Ok(steps.into_iter().zip(d).zip(eps).filter_map(|((s, d), e)| s.map(|s| (s, d, e))).collect())
}

fn medians(by_step: BTreeMap<u64, Vec<f64>>) -> Vec<(u64, f64)> {
    by_step.into_iter().map(|(s, v)| (s, tram_stats::median(&v))).collect()
}

/// The curves of each `(label, method id)` entry from the runs under `runs_dir` (runs without `steps.csv` are
/// left out).
pub fn curves(runs_dir: &Path, entries: &[(String, String)], summaries: &[Summary]) -> Result<Vec<Curve>> {
    entries
        .iter()
        .map(|(label, id)| {
            let (mut d, mut eps, mut runs) = (BTreeMap::<u64, Vec<f64>>::new(), BTreeMap::<u64, Vec<f64>>::new(), 0);
            for s in runs_of(summaries, id) {
                let path = runs_dir.join(&s.run_id).join("steps.csv");
                if !path.exists() {
                    continue;
                }
                runs += 1;
                for (step, dv, ev) in read_steps(&path)? {
                    if let Some(v) = dv {
                        d.entry(step).or_default().push(v);
                    }
                    if let Some(v) = ev {
                        eps.entry(step).or_default().push(v);
                    }
                }
            }
            Ok(Curve {
                label: label.clone(),
                method_id: id.clone(),
                runs,
                divergence: medians(d),
                eps_norm: medians(eps),
            })
        })
        .collect()
}

/// The long form of the curves that measure something: one row per (method, step).
pub fn frame(curves: &[Curve]) -> Result<DataFrame> {
    let (mut label, mut method, mut runs, mut step, mut d, mut eps) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for c in curves.iter().filter(|c| c.measures()) {
        let d_of: BTreeMap<u64, f64> = c.divergence.iter().copied().collect();
        let eps_of: BTreeMap<u64, f64> = c.eps_norm.iter().copied().collect();
        let steps: std::collections::BTreeSet<u64> = d_of.keys().chain(eps_of.keys()).copied().collect();
        for s in steps {
            label.push(c.label.clone());
            method.push(c.method_id.clone());
            runs.push(c.runs as u64);
            step.push(s);
            d.push(d_of.get(&s).copied());
            eps.push(eps_of.get(&s).copied());
        }
    }
    Ok(DataFrame::new(vec![
        Column::new("method".into(), label),
        Column::new("method_id".into(), method),
        Column::new("runs".into(), runs),
        Column::new("step".into(), step),
        Column::new("divergence_median".into(), d),
        Column::new("eps_norm_median".into(), eps),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tram_task::Metric;

    #[test]
    fn medians_over_seeds_per_step_from_steps_csv() {
        let dir = std::env::temp_dir().join(format!("tram-trust-region-{}", std::process::id()));
        let head = "step,lr,loss,perturbed_loss,divergence,radius,eps_norm,grad_norm\n";
        let runs = [
            ("tram-x-s0", "0,0.1,2.0,3.0,1.0,,2.0,0.5\n1,0.1,2.0,3.0,3.0,,4.0,0.5\n"),
            ("tram-x-s1", "0,0.1,2.0,3.0,2.0,,6.0,0.5\n1,0.1,2.0,3.0,NaN,,8.0,0.5\n"),
            ("tram-x-s2", "0,0.1,2.0,3.0,4.0,,1.0,0.5\n"),
            ("base-s0", "0,0.1,2.0,,,,,0.5\n1,0.1,2.0,,,,,0.5\n"),
        ];
        for (id, rows) in runs {
            std::fs::create_dir_all(dir.join(id)).unwrap();
            std::fs::write(dir.join(id).join("steps.csv"), format!("{head}{rows}")).unwrap();
        }
        let summaries: Vec<Summary> = [("tram-x", 0), ("tram-x", 1), ("tram-x", 2), ("tram-x", 3), ("base", 0)]
            .into_iter()
            .map(|(m, s)| Summary::fixture(m, s, Metric::Perplexity, vec![]))
            .collect();
        let entries = [("TRAM-x".to_string(), "tram-x".to_string()), ("Adam".to_string(), "base".to_string())];
        let c = curves(&dir, &entries, &summaries).unwrap();
        // Step 0: d over {1, 2, 4}, ‖ε‖ over {2, 6, 1}; step 1: the NaN left out, so over {3} and {4, 8}. Seed 3 has
        // no steps.csv.
        assert_eq!(c[0].runs, 3);
        assert_eq!(c[0].divergence, vec![(0, 2.0), (1, 3.0)]);
        assert_eq!(c[0].eps_norm, vec![(0, 2.0), (1, 6.0)]);
        assert!(!c[1].measures() && c[1].runs == 1, "{:?}", c[1]);
        let f = frame(&c).unwrap();
        assert_eq!(f.height(), 2, "the base optimizer measures neither: no rows");
        assert_eq!(f.column("eps_norm_median").unwrap().f64().unwrap().get(1), Some(6.0));
        std::fs::remove_dir_all(&dir).ok();
    }
}
