//! A run folder's CSV files: `steps.csv` (one row per optimizer step), `evals.csv` (one row per epoch and
//! evaluation set) and `examples.csv` (one row per example of the reported evaluations, what the significance
//! tests read back).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use tram_core::StepReport;
use tram_task::{Evaluation, RunResult};

use crate::atomic;
use crate::summary::Summary;

/// One row per step.
pub fn steps_frame(steps: &[StepReport]) -> Result<DataFrame> {
    let col_f = |name: &str, f: &dyn Fn(&StepReport) -> Option<f64>| {
        Column::new(name.into(), steps.iter().map(f).collect::<Vec<Option<f64>>>())
    };
    let col_u = |name: &str, f: &dyn Fn(&StepReport) -> u64| {
        Column::new(name.into(), steps.iter().map(f).collect::<Vec<u64>>())
    };
    Ok(DataFrame::new(vec![
        col_u("step", &|r| r.step),
        col_f("lr", &|r| Some(r.lr)),
        col_f("loss", &|r| Some(r.loss)),
        col_f("perturbed_loss", &|r| r.perturbed_loss),
        col_f("divergence", &|r| r.divergence),
        col_f("radius", &|r| r.radius),
        col_f("eps_norm", &|r| r.eps_norm),
        col_f("grad_norm", &|r| Some(r.grad_norm)),
        col_f("descent_grad_norm", &|r| Some(r.descent_grad_norm)),
        col_u("forward_passes", &|r| r.forward_passes as u64),
        col_u("backward_passes", &|r| r.backward_passes as u64),
        Column::new("skipped".into(), steps.iter().map(|r| r.skipped).collect::<Vec<bool>>()),
    ])?)
}

/// One row per (epoch, evaluation set).
pub fn evals_frame(result: &RunResult) -> Result<DataFrame> {
    let rows: Vec<(u64, u64, &Evaluation)> =
        result.epochs.iter().flat_map(|e| e.evals.iter().map(move |v| (e.epoch as u64, e.steps, v))).collect();
    let s = |f: &dyn Fn(&Evaluation) -> String| rows.iter().map(|r| f(r.2)).collect::<Vec<String>>();
    Ok(DataFrame::new(vec![
        Column::new("epoch".into(), rows.iter().map(|r| r.0).collect::<Vec<u64>>()),
        Column::new("steps".into(), rows.iter().map(|r| r.1).collect::<Vec<u64>>()),
        Column::new("set".into(), s(&|e| e.set.clone())),
        Column::new("domain".into(), s(&|e| e.domain.as_str().into())),
        Column::new("split".into(), s(&|e| e.split.as_str().into())),
        Column::new("metric".into(), s(&|e| e.metric.as_str().into())),
        Column::new("value".into(), rows.iter().map(|r| r.2.value).collect::<Vec<f64>>()),
        Column::new("loss".into(), rows.iter().map(|r| r.2.loss).collect::<Vec<f64>>()),
        Column::new("examples".into(), rows.iter().map(|r| r.2.examples as u64).collect::<Vec<u64>>()),
    ])?)
}

/// One row per example of the reported evaluations: what the significance tests read.
pub fn examples_frame(evals: &[Evaluation]) -> Result<DataFrame> {
    let (mut set, mut index, mut value) = (vec![], vec![], vec![]);
    for e in evals {
        for (i, v) in e.per_example.iter().enumerate() {
            set.push(e.key());
            index.push(i as u64);
            value.push(*v);
        }
    }
    Ok(DataFrame::new(vec![
        Column::new("set".into(), set),
        Column::new("index".into(), index),
        Column::new("value".into(), value),
    ])?)
}

/// Per-example values of each run's reported evaluations, by run id and set (from `examples.csv`).
pub type PerExample = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

/// Reads `examples.csv` of every run under `runs_dir`; runs without one are left out.
pub fn read_per_example(runs_dir: &Path, summaries: &[Summary]) -> Result<PerExample> {
    let mut out = PerExample::new();
    for s in summaries {
        let path = runs_dir.join(&s.run_id).join("examples.csv");
        if !path.exists() {
            continue;
        }
        let df = atomic::read_csv(&path)?;
        let sets = df.column("set").with_context(|| format!("{}: no column `set`", path.display()))?.str()?.clone();
        let index = df.column("index")?.cast(&DataType::UInt64)?;
        let values = df.column("value")?.cast(&DataType::Float64)?;
        let values = values.f64()?;
        let by_set = out.entry(s.run_id.clone()).or_default();
        for ((set, i), v) in sets.into_iter().zip(index.u64()?).zip(values) {
            if let (Some(set), Some(i), Some(v)) = (set, i, v) {
                let values = by_set.entry(set.to_string()).or_default();
                // Runs are paired example by example (block by block): a value's position is its example's index.
                anyhow::ensure!(i == values.len() as u64, "{}: `{set}` lists example {i} out of order", path.display());
                values.push(v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tram_task::Metric;

    #[test]
    fn per_example_values_are_read_in_index_order_or_refused() {
        let dir = std::env::temp_dir().join(format!("tram-run-csv-{}", std::process::id()));
        let s = [Summary::fixture("base", 0, Metric::Perplexity, vec![])];
        std::fs::create_dir_all(dir.join("base-s0")).unwrap();
        let write =
            |rows: &str| std::fs::write(dir.join("base-s0/examples.csv"), format!("set,index,value\n{rows}")).unwrap();
        write("a,0,3.5\nb,0,1.0\na,1,2.5\n");
        let pe = read_per_example(&dir, &s).unwrap();
        assert_eq!((pe["base-s0"]["a"].clone(), pe["base-s0"]["b"].clone()), (vec![3.5, 2.5], vec![1.0]));
        // A block out of place would be paired with another run's different block.
        write("a,1,2.5\na,0,3.5\n");
        let err = read_per_example(&dir, &s).unwrap_err().to_string();
        assert!(err.contains("`a` lists example 1 out of order"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
