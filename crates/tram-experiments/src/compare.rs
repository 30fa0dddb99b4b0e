//! `tram compare`: methods across runs from long CSVs (mean, 95% CI and n per metric and set), or paired by seed
//! against a baseline method (difference, 95% interval, Wilcoxon p-value).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::long_csv;
use crate::significance::{accuracy_count, Counts};

/// What a paired comparison pairs, by seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline<'a> {
    /// Every other method of a profile with this method of the same profile.
    Method(&'a str),
    /// Every method of the other profiles with the same method of this profile (e.g. a bf16 sweep with its float32
    /// one).
    Profile(&'a str),
}

/// Mean, 95% CI and n per (experiment, profile, metric, set, method) across runs; with a baseline, each other
/// method's (or profile's) paired difference to it (same seed), its 95% interval and the two-sided Wilcoxon
/// p-value.
pub fn run(paths: &[PathBuf], metric: Option<&str>, baseline: Option<Baseline<'_>>) -> Result<()> {
    if let Some(b) = baseline {
        println!("{}", paired(paths, metric, b)?);
        return Ok(());
    }
    if paths.is_empty() {
        bail!("give one or more tidy CSVs, e.g. results/table3-embedded-long.csv");
    }
    let mut groups: BTreeMap<(String, String, String, String, String), Vec<f64>> = BTreeMap::new();
    for r in long_csv::read_all(paths)? {
        if metric.is_none_or(|m| r.metric.contains(m)) {
            groups.entry((r.experiment, r.profile, r.metric, r.set, r.method)).or_default().push(r.value);
        }
    }
    if groups.is_empty() {
        bail!("no rows{}", metric.map_or(String::new(), |m| format!(" with a metric containing `{m}`")));
    }
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut n, mut mu, mut ci) = (vec![], vec![], vec![]);
    for ((e, p, k, s, m), v) in groups {
        for (c, x) in cols.iter_mut().zip([e, p, k, s, m]) {
            c.push(x);
        }
        n.push(v.len() as u64);
        mu.push(tram_stats::mean(&v));
        ci.push(tram_stats::ci95_half_width(&v));
    }
    let [e, p, k, s, m] = cols;
    let df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), p),
        Column::new("metric".into(), k),
        Column::new("set".into(), s),
        Column::new("method".into(), m),
        Column::new("n".into(), n),
        Column::new("mean".into(), mu),
        Column::new("ci95".into(), ci),
    ])?;
    println!("{df}");
    Ok(())
}

fn paired(paths: &[PathBuf], metric: Option<&str>, pairing: Baseline<'_>) -> Result<DataFrame> {
    // Runs are grouped by (experiment, fixed, metric, set), where the fixed part is the profile when methods are
    // paired and the method when profiles are; within a group, by the compared arm (method or profile), by seed.
    type Key = (String, String, String, String);
    let (baseline, by_profile) = match pairing {
        Baseline::Method(m) => (m, false),
        Baseline::Profile(p) => (p, true),
    };
    let mut values: BTreeMap<Key, BTreeMap<String, BTreeMap<u64, f64>>> = BTreeMap::new();
    // Examples per (experiment, profile, set, method, seed): an accuracy is k/n of them, compared in counts.
    let mut examples: BTreeMap<(String, String, String, String, u64), f64> = BTreeMap::new();
    for r in long_csv::read_all(paths)? {
        if r.metric == "examples" {
            examples
                .insert((r.experiment.clone(), r.profile.clone(), r.set.clone(), r.method.clone(), r.seed), r.value);
        }
        if metric.is_none_or(|m| r.metric.contains(m)) {
            let (fixed, arm) = if by_profile { (r.method, r.profile) } else { (r.profile, r.method) };
            values
                .entry((r.experiment, fixed, r.metric, r.set))
                .or_default()
                .entry(arm)
                .or_default()
                .insert(r.seed, r.value);
        }
    }
    // (profile, method) of an arm of a group.
    let profile_method = |fixed: &str, arm: &str| {
        if by_profile {
            (arm.to_string(), fixed.to_string())
        } else {
            (fixed.to_string(), arm.to_string())
        }
    };
    let mut cols: [Vec<String>; 5] = Default::default();
    let (mut n, mut diff): (Vec<u64>, Vec<f64>) = (vec![], vec![]);
    let (mut ci, mut p): (Vec<Option<f64>>, Vec<Option<f64>>) = (vec![], vec![]);
    let mut found = false;
    for ((e, fixed, k, set), arms) in &values {
        let Some(base) = arms.get(baseline) else { continue };
        found = true;
        for (arm, by_seed) in arms.iter().filter(|(a, _)| a.as_str() != baseline) {
            let pairs: Vec<(f64, f64)> = by_seed.iter().filter_map(|(s, v)| base.get(s).map(|b| (*v, *b))).collect();
            if pairs.is_empty() {
                continue;
            }
            let seeds: Vec<u64> = by_seed.keys().copied().filter(|s| base.contains_key(s)).collect();
            let (a, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            let Ok(d) = tram_stats::paired_difference(&a, &b) else { continue };
            let n_of = |arm: &str, seed: u64| {
                let (pr, m) = profile_method(fixed, arm);
                examples.get(&(e.clone(), pr, set.clone(), m, seed))
            };
            let counts =
                (k == "accuracy").then(|| accuracy_counts(&a, &b, &seeds, |s| n_of(arm, s), |s| n_of(baseline, s)));
            let test = match counts.flatten() {
                Some((x, y, n)) => tram_stats::wilcoxon_counts(
                    &x,
                    &y,
                    &n,
                    tram_stats::Alternative::TwoSided,
                    tram_stats::WilcoxonMode::Auto,
                ),
                None => tram_stats::wilcoxon(&a, &b, tram_stats::Alternative::TwoSided),
            };
            let w = match test {
                Ok(w) => Some(w.pvalue),
                Err(tram_stats::StatsError::AllZeroDifferences) => Some(1.0),
                Err(_) => None,
            };
            let (pr, m) = profile_method(fixed, arm);
            for (c, x) in cols.iter_mut().zip([e.clone(), pr, k.clone(), set.clone(), m]) {
                c.push(x);
            }
            n.push(d.n as u64);
            diff.push(d.mean_diff);
            ci.push(Some(d.ci95).filter(|v| v.is_finite()));
            p.push(w);
        }
    }
    if !found {
        if by_profile {
            bail!("no rows of profile `{baseline}` to compare with (profiles are named as in the `profile` column)");
        }
        bail!("no rows of method `{baseline}` to compare with (methods are named as in the `method` column, e.g. base, sam-rho0.1)");
    }
    let [e, pr, k, set, m] = cols;
    let df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), pr),
        Column::new("metric".into(), k),
        Column::new("set".into(), set),
        Column::new("method".into(), m),
        Column::new("pairs".into(), n),
        Column::new(format!("mean diff vs {baseline}").into(), diff),
        Column::new("ci95".into(), ci),
        Column::new("wilcoxon_p".into(), p),
    ])?;
    Ok(df)
}

/// Paired accuracies `a`, `b` (by `seeds`) as counts k of one test set's n examples, when every run of both
/// methods reports the same n: then equal differences tie as in SciPy on the exact values
/// ([`tram_stats::wilcoxon_counts`]). `None` otherwise (e.g. an average over sets, which has no examples row).
fn accuracy_counts<'a>(
    a: &[f64],
    b: &[f64],
    seeds: &[u64],
    n_a: impl Fn(u64) -> Option<&'a f64>,
    n_b: impl Fn(u64) -> Option<&'a f64>,
) -> Option<Counts> {
    let n = *n_a(*seeds.first()?)?;
    let same = seeds.iter().all(|&s| n_a(s) == Some(&n) && n_b(s) == Some(&n));
    if !(same && n >= 1.0 && n.fract() == 0.0) {
        return None;
    }
    let n = n as u64;
    let count = |acc: f64| accuracy_count(acc, n).map(|k| vec![k]);
    let x = a.iter().map(|&v| count(v)).collect::<Option<Vec<_>>>()?;
    let y = b.iter().map(|&v| count(v)).collect::<Option<Vec<_>>>()?;
    Some((x, y, vec![n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracies_of_one_set_compare_in_counts_so_equal_differences_tie() {
        // 1/3 − 0/3 twice: as floats the two differences need not be equal; as counts they are 1 and 1.
        let (a, b) = (vec![1.0 / 3.0, 2.0 / 3.0, 1.0], vec![0.0, 1.0 / 3.0, 0.0]);
        let n = 3.0;
        let (x, y, size) = accuracy_counts(&a, &b, &[0, 1, 2], |_| Some(&n), |_| Some(&n)).unwrap();
        assert_eq!((x, y, size), (vec![vec![1], vec![2], vec![3]], vec![vec![0], vec![1], vec![0]], vec![3]));
        // Another set size for one run, or a value that is not k/n: no counts (the float test is used).
        let other = 4.0;
        assert!(accuracy_counts(&a, &b, &[0, 1, 2], |s| Some(if s == 1 { &other } else { &n }), |_| Some(&n)).is_none());
        assert!(accuracy_counts(&[0.5], &[0.0], &[0], |_| Some(&n), |_| Some(&n)).is_none());
    }

    #[test]
    fn profiles_pair_by_method_and_seed() {
        let dir = std::env::temp_dir().join(format!("tram-compare-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = "experiment,profile,run_id,method,seed,set,domain,metric,value\n";
        // Two methods, three seeds, accuracy k/10 on `en`; the bf16 profile is 1/10 above for base, equal for sam.
        let write = |profile: &str, shift: [i32; 2]| {
            let mut text = header.to_string();
            for (m, method) in ["base", "sam"].iter().enumerate() {
                for seed in 0..3 {
                    let k = 5 + seed + shift[m];
                    let id = format!("{method}-s{seed}");
                    text += &format!("t,{profile},{id},{method},{seed},en,in-domain,accuracy,{}\n", k as f64 / 10.0);
                    text += &format!("t,{profile},{id},{method},{seed},en,in-domain,examples,10\n");
                }
            }
            let path = dir.join(format!("{profile}-long.csv"));
            std::fs::write(&path, text).unwrap();
            path
        };
        let paths = [write("fp32", [0, 0]), write("bf16", [1, 0])];
        let df = paired(&paths, Some("accuracy"), Baseline::Profile("fp32")).unwrap();
        assert_eq!(df.height(), 2, "{df}");
        let col = |name: &str| df.column(name).unwrap().as_materialized_series().clone();
        let profiles: Vec<String> = col("profile").str().unwrap().into_no_null_iter().map(String::from).collect();
        let methods: Vec<String> = col("method").str().unwrap().into_no_null_iter().map(String::from).collect();
        assert_eq!(profiles, ["bf16", "bf16"]);
        assert_eq!(methods, ["base", "sam"]);
        let diffs: Vec<f64> = col("mean diff vs fp32").f64().unwrap().into_no_null_iter().collect();
        assert!((diffs[0] - 0.1).abs() < 1e-12 && diffs[1] == 0.0, "{diffs:?}");
        let p: Vec<Option<f64>> = col("wilcoxon_p").f64().unwrap().into_iter().collect();
        // Three equal differences of one count: SciPy's wilcoxon([1, 1, 1]) gives 0.25 (exact); none: 1.
        assert_eq!(p, [Some(0.25), Some(1.0)]);
        let none = paired(&paths, Some("accuracy"), Baseline::Profile("fp16")).unwrap_err();
        assert!(none.to_string().contains("profile `fp16`"), "{none}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
