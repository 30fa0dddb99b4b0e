//! The paper's tables, built with Polars from what the runs measured: `results/<table>.csv` laid out like the
//! paper's table with the paper's numbers beside ours, and `results/<experiment>-<profile>-long.csv`, one row per
//! (run, metric), which `tram compare` reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use polars::prelude::*;
use tram_core::{BaseConfig, MethodConfig, MethodName};

use crate::atomic;
use crate::runs::Summary;
use crate::stats::{ci95, mean};
use crate::sweep::Timing;

/// The label the paper prints for a method (the base optimizer by its name).
pub fn label(method: &MethodConfig, base: &BaseConfig) -> String {
    match method.name {
        MethodName::Base => match base {
            BaseConfig::Sgd { .. } => "SGD".into(),
            BaseConfig::Adam { .. } => "Adam".into(),
            BaseConfig::AdamW { .. } => "AdamW".into(),
        },
        n => n.paper_label().into(),
    }
}

/// One row per (run, metric).
pub fn long_frame(experiment: &str, profile: &str, summaries: &[Summary]) -> Result<DataFrame> {
    let (mut run, mut method, mut seed, mut metric, mut value) = (vec![], vec![], vec![], vec![], vec![]);
    for s in summaries {
        let mut push = |m: String, v: f64| {
            run.push(s.run_id.clone());
            method.push(s.method.clone());
            seed.push(s.seed);
            metric.push(m);
            value.push(v);
        };
        push("in_domain_acc".into(), s.in_domain_acc);
        for (set, acc) in &s.ood_acc {
            push(format!("ood_acc:{set}"), *acc);
        }
        push("ood_mean_acc".into(), s.ood_mean_acc);
        push("final_train_loss".into(), s.final_train_loss);
        push("first_step_loss".into(), s.first_step_loss);
        push("last_step_loss".into(), s.last_step_loss);
        push("forward_passes_per_step".into(), s.forward_passes_per_step);
        push("backward_passes_per_step".into(), s.backward_passes_per_step);
        push("extra_memory_bytes".into(), s.extra_memory_bytes as f64);
        push("train_seconds".into(), s.train_seconds);
        push("skipped_steps".into(), s.skipped_steps as f64);
    }
    let n = run.len();
    Ok(DataFrame::new(vec![
        Column::new("experiment".into(), vec![experiment.to_string(); n]),
        Column::new("profile".into(), vec![profile.to_string(); n]),
        Column::new("run_id".into(), run),
        Column::new("method".into(), method),
        Column::new("seed".into(), seed),
        Column::new("metric".into(), metric),
        Column::new("value".into(), value),
    ])?)
}

/// Paper table rows keyed by their first column.
fn paper_rows(path: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let Ok(df) = atomic::read_csv(path) else { return out };
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    for i in 0..df.height() {
        let row: Vec<(String, String)> = names
            .iter()
            .map(|n| {
                let v = df.column(n).ok().and_then(|c| c.get(i).ok()).map(|v| match v {
                    AnyValue::String(s) => s.to_string(),
                    other => other.to_string(),
                });
                (n.clone(), v.unwrap_or_default())
            })
            .collect();
        out.insert(row[0].1.clone(), row[1..].to_vec());
    }
    out
}

/// Table 2: the TRAM variants and their comparators, with measured passes, step time, memory and outcome.
pub fn table2(timings: &[Timing], summaries: &[Summary], base: &BaseConfig, paper_dir: &Path) -> Result<DataFrame> {
    let paper = paper_rows(&paper_dir.join("table2.csv"));
    let base_ms = timings.iter().find(|t| t.method.name == MethodName::Base).map(|t| t.median_ms);
    let sam_ms = timings.iter().find(|t| t.method.name == MethodName::Sam).map(|t| t.median_ms);
    let mut cols: BTreeMap<&str, Vec<Option<String>>> = BTreeMap::new();
    let mut nums: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    let mut labels = vec![];
    for t in timings {
        let m = t.method.build()?;
        let (measure, rule, domain) = m.describe();
        let lab = label(&t.method, base);
        let stated = t.method.name.paper_passes();
        let outcome: Vec<&Summary> = summaries.iter().filter(|s| s.method == t.method.name.as_str()).collect();
        let acc = |f: &dyn Fn(&Summary) -> f64| (!outcome.is_empty()).then(|| mean(&outcome.iter().map(|s| f(s)).collect::<Vec<_>>()));
        cols.entry("method").or_default().push(Some(t.method.name.as_str().to_string()));
        cols.entry("trust_region_measurement").or_default().push(Some(measure));
        cols.entry("eps").or_default().push(Some(rule));
        cols.entry("domain").or_default().push(Some(domain));
        cols.entry("passes_measured").or_default().push(Some(format!("{} →, {} ←", t.forward_passes, t.backward_passes)));
        cols.entry("passes_paper").or_default().push(stated.map(|(f, b)| format!("{f} →, {b} ←")));
        cols.entry("passes_match").or_default().push(stated.map(|s| (s == (t.forward_passes, t.backward_passes)).to_string()));
        cols.entry("paper_row").or_default().push(
            paper.get(&lab).map(|r| r.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")),
        );
        nums.entry("step_ms_median").or_default().push(Some(t.median_ms));
        nums.entry("ratio_to_base").or_default().push(base_ms.map(|b| t.median_ms / b));
        nums.entry("ratio_to_sam").or_default().push(sam_ms.map(|s| t.median_ms / s));
        nums.entry("extra_memory_mb").or_default().push(Some(t.extra_memory_bytes as f64 / 1e6));
        nums.entry("extra_memory_x_params").or_default().push(Some(t.extra_memory_bytes as f64 / t.param_bytes as f64));
        nums.entry("in_domain_acc").or_default().push(acc(&|s| s.in_domain_acc));
        nums.entry("ood_mean_acc").or_default().push(acc(&|s| s.ood_mean_acc));
        labels.push(lab);
    }
    let mut columns = vec![Column::new("variant".into(), labels)];
    for k in ["method", "trust_region_measurement", "eps", "domain", "passes_measured", "passes_paper", "passes_match"] {
        columns.push(Column::new(k.into(), cols.remove(k).unwrap_or_default()));
    }
    for k in ["step_ms_median", "ratio_to_base", "ratio_to_sam", "extra_memory_mb", "extra_memory_x_params", "in_domain_acc", "ood_mean_acc"] {
        columns.push(Column::new(k.into(), nums.remove(k).unwrap_or_default()));
    }
    columns.push(Column::new("paper_table2".into(), cols.remove("paper_row").unwrap_or_default()));
    Ok(DataFrame::new(columns)?)
}

fn pm(v: &[f64]) -> String {
    let ci = ci95(v);
    if ci.is_nan() {
        format!("{:.2}", 100.0 * mean(v))
    } else {
        format!("{:.2}±{:.2}", 100.0 * mean(v), 100.0 * ci)
    }
}

/// Table 3: top-1 accuracy (%) per method, mean ± 95% CI over seeds, in-domain and each out-of-domain set, with
/// the paper's Table 3 (ViT-B/16 on CIFAR-100, Cars, Flowers) beside.
pub fn table3(methods: &[MethodConfig], summaries: &[Summary], base: &BaseConfig, paper_dir: &Path) -> Result<DataFrame> {
    let paper = paper_rows(&paper_dir.join("table3.csv"));
    let paper_cols: Vec<String> = paper.values().next().map(|r| r.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let ood_sets: Vec<String> = summaries.first().map(|s| s.ood_acc.iter().map(|(n, _)| n.clone()).collect()).unwrap_or_default();
    let in_name = summaries.first().map(|s| s.in_domain.clone()).unwrap_or_else(|| "in-domain".into());
    let mut rows: Vec<Vec<Option<String>>> = vec![];
    let mut labels = vec![];
    let mut seeds = vec![];
    for m in methods {
        let runs: Vec<&Summary> = summaries.iter().filter(|s| s.method == m.name.as_str()).collect();
        let lab = label(m, base);
        let mut row = vec![Some(pm(&runs.iter().map(|s| s.in_domain_acc).collect::<Vec<_>>()))];
        for set in &ood_sets {
            let v: Vec<f64> = runs.iter().filter_map(|s| s.ood_acc.iter().find(|(n, _)| n == set).map(|x| x.1)).collect();
            row.push(Some(pm(&v)));
        }
        row.push(Some(pm(&runs.iter().map(|s| s.ood_mean_acc).collect::<Vec<_>>())));
        let p = paper.get(&lab);
        for c in &paper_cols {
            row.push(p.and_then(|r| r.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone())));
        }
        rows.push(row);
        labels.push(lab);
        seeds.push(runs.len() as u64);
    }
    let short = |s: &str| s.trim_start_matches("emoji-").trim_end_matches("/test").to_string();
    let mut names = vec![format!("{} (in-domain)", short(&in_name))];
    names.extend(ood_sets.iter().map(|s| format!("{} (OOD)", short(s))));
    names.push("OOD mean".into());
    names.extend(paper_cols.iter().map(|c| format!("paper {c}")));
    let mut columns = vec![Column::new("method".into(), labels), Column::new("seeds".into(), seeds)];
    for (j, n) in names.iter().enumerate() {
        columns.push(Column::new(n.as_str().into(), rows.iter().map(|r| r[j].clone()).collect::<Vec<_>>()));
    }
    Ok(DataFrame::new(columns)?)
}

/// A compact copy of a table for the terminal: the given columns, floats to 3 significant digits.
pub fn printable(df: &DataFrame, columns: &[&str]) -> Result<DataFrame> {
    let mut out = Vec::new();
    for name in columns {
        let Ok(c) = df.column(name) else { continue };
        let col = match c.dtype() {
            DataType::Float64 => {
                let v: Vec<Option<String>> = c.f64()?.into_iter().map(|x| x.map(fmt3)).collect();
                Column::new((*name).into(), v)
            }
            _ => c.clone(),
        };
        out.push(col);
    }
    Ok(DataFrame::new(out)?)
}

fn fmt3(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The columns of Table 2 printed on the terminal (the CSV has them all).
pub const TABLE2_PRINT: [&str; 12] = [
    "variant",
    "trust_region_measurement",
    "eps",
    "passes_measured",
    "passes_paper",
    "passes_match",
    "step_ms_median",
    "ratio_to_base",
    "ratio_to_sam",
    "extra_memory_x_params",
    "in_domain_acc",
    "ood_mean_acc",
];
