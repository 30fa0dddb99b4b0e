//! `tram compare` (methods across runs) and `tram check` (a regression check of a tidy CSV against expectations).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;

use crate::atomic::read_csv;
use crate::stats::{ci95, mean};

struct Row {
    experiment: String,
    profile: String,
    run_id: String,
    method: String,
    metric: String,
    value: f64,
}

fn rows(path: &Path) -> Result<Vec<Row>> {
    let df = read_csv(path)?;
    let s = |name: &str| -> Result<Vec<String>> {
        let c = df.column(name).with_context(|| format!("{}: no column `{name}` (is it a *-long.csv?)", path.display()))?;
        Ok(c.cast(&DataType::String)?.str()?.into_iter().map(|v| v.unwrap_or_default().to_string()).collect())
    };
    let values: Vec<f64> =
        df.column("value")?.cast(&DataType::Float64)?.f64()?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let (e, p, r, m, k) = (s("experiment")?, s("profile")?, s("run_id")?, s("method")?, s("metric")?);
    Ok((0..df.height())
        .map(|i| Row {
            experiment: e[i].clone(),
            profile: p[i].clone(),
            run_id: r[i].clone(),
            method: m[i].clone(),
            metric: k[i].clone(),
            value: values[i],
        })
        .collect())
}

pub fn compare(paths: &[PathBuf], metric: Option<&str>) -> Result<()> {
    if paths.is_empty() {
        bail!("give one or more tidy CSVs, e.g. results/table3-embedded-long.csv");
    }
    let mut groups: BTreeMap<(String, String, String, String), Vec<f64>> = BTreeMap::new();
    for p in paths {
        for r in rows(p)? {
            if metric.is_none_or(|m| r.metric.contains(m)) {
                groups.entry((r.experiment, r.profile, r.metric, r.method)).or_default().push(r.value);
            }
        }
    }
    let mut cols: [Vec<String>; 4] = Default::default();
    let (mut n, mut mu, mut ci) = (vec![], vec![], vec![]);
    for ((e, p, k, m), v) in groups {
        for (c, x) in cols.iter_mut().zip([e, p, k, m]) {
            c.push(x);
        }
        n.push(v.len() as u64);
        mu.push(mean(&v));
        ci.push(ci95(&v));
    }
    let [e, p, k, m] = cols;
    let df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), p),
        Column::new("metric".into(), k),
        Column::new("method".into(), m),
        Column::new("n".into(), n),
        Column::new("mean".into(), mu),
        Column::new("ci95".into(), ci),
    ])?;
    println!("{df}");
    Ok(())
}

/// Tolerance class of a metric in the regression check; `None`: not compared (wall-clock times).
fn tolerance(metric: &str, acc_tol: f64, loss_tol: f64) -> Option<(f64, bool)> {
    if metric.ends_with("_acc") || metric.starts_with("ood_acc:") {
        Some((acc_tol, false))
    } else if metric.contains("loss") {
        Some((loss_tol, true))
    } else if metric == "train_seconds" {
        None
    } else {
        Some((0.0, false))
    }
}

pub fn check(actual: &Path, expected: &Path, acc_tol: f64, loss_tol: f64) -> Result<()> {
    let got: BTreeMap<(String, String), f64> =
        rows(actual)?.into_iter().map(|r| ((r.run_id, r.metric), r.value)).collect();
    let (mut passed, mut failed) = (0, 0);
    for r in rows(expected)? {
        let Some((tol, relative)) = tolerance(&r.metric, acc_tol, loss_tol) else { continue };
        let key = (r.run_id.clone(), r.metric.clone());
        let ok = match got.get(&key) {
            None => {
                println!("MISSING {} {}", r.run_id, r.metric);
                false
            }
            Some(&v) => {
                let bound = if relative { tol * r.value.abs() } else { tol };
                let ok = (v - r.value).abs() <= bound || (v.is_nan() && r.value.is_nan());
                if !ok {
                    println!("DIFF    {} {}: expected {} got {} (tolerance {bound})", r.run_id, r.metric, r.value, v);
                }
                ok
            }
        };
        if ok {
            passed += 1
        } else {
            failed += 1
        }
    }
    println!("regression: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!(
            "{failed} metrics differ from {}; if the change is deliberate, regenerate the expectations with `just regress-update`",
            expected.display()
        );
    }
    Ok(())
}
