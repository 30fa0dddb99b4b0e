//! `tram compare` (methods across runs) and `tram check` (a regression check of a tidy CSV against expectations).
//! Both read the `*-long.csv` files and refuse, naming the file and the row, anything that is not one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use crate::atomic::read_csv;

/// One row of a long CSV.
#[derive(Debug)]
pub struct Row {
    pub experiment: String,
    pub profile: String,
    pub run_id: String,
    pub method: String,
    pub seed: u64,
    pub set: String,
    pub domain: String,
    pub metric: String,
    pub value: f64,
}

const COLUMNS: [&str; 9] = ["experiment", "profile", "run_id", "method", "seed", "set", "domain", "metric", "value"];

/// The rows of a long CSV; an error names the file and what is wrong (a missing column, a short row, a value
/// that is not a number).
pub fn rows(path: &Path) -> Result<Vec<Row>> {
    let df = read_csv(path)?;
    let have: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    if let Some(missing) = COLUMNS.iter().find(|c| !have.iter().any(|h| h == *c)) {
        bail!(
            "{}: no column `{missing}`; a long CSV (results/<experiment>-<profile>-long.csv) has the columns {}",
            path.display(),
            COLUMNS.join(", ")
        );
    }
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        let c = df.column(name)?.cast(&DataType::String)?;
        Ok(c.str()?.into_iter().map(|v| v.map(str::to_string)).collect())
    };
    let (e, p, r, m, seed, set, domain, k, v) = (
        text("experiment")?,
        text("profile")?,
        text("run_id")?,
        text("method")?,
        text("seed")?,
        text("set")?,
        text("domain")?,
        text("metric")?,
        text("value")?,
    );
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let line = i + 2;
        let need = |c: &[Option<String>], name: &str| -> Result<String> {
            c[i].clone()
                .with_context(|| format!("{} line {line}: the `{name}` field is empty (a short row?)", path.display()))
        };
        let value_text = need(&v, "value")?;
        let value: f64 = value_text
            .trim()
            .parse()
            .with_context(|| format!("{} line {line}: value `{value_text}` is not a number", path.display()))?;
        let seed_text = need(&seed, "seed")?;
        out.push(Row {
            experiment: need(&e, "experiment")?,
            profile: need(&p, "profile")?,
            run_id: need(&r, "run_id")?,
            method: need(&m, "method")?,
            seed: seed_text
                .trim()
                .parse()
                .with_context(|| format!("{} line {line}: seed `{seed_text}` is not a number", path.display()))?,
            set: set[i].clone().unwrap_or_default(),
            domain: domain[i].clone().unwrap_or_default(),
            metric: need(&k, "metric")?,
            value,
        });
    }
    Ok(out)
}

/// Mean, 95% CI and n per (experiment, profile, metric, set, method) across runs.
pub fn compare(paths: &[PathBuf], metric: Option<&str>) -> Result<()> {
    if paths.is_empty() {
        bail!("give one or more tidy CSVs, e.g. results/table3-embedded-long.csv");
    }
    let mut groups: BTreeMap<(String, String, String, String, String), Vec<f64>> = BTreeMap::new();
    for p in paths {
        for r in rows(p)? {
            if metric.is_none_or(|m| r.metric.contains(m)) {
                groups.entry((r.experiment, r.profile, r.metric, r.set, r.method)).or_default().push(r.value);
            }
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

/// How the regression check compares a metric (see [`expectations`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Counts and sizes the code determines (passes per step, memory, skipped steps): exactly.
    Exact,
    /// The first steps' losses, norms and divergences: what rounding barely touches but any change of method,
    /// hyperparameter, data or model moves (relative [`ROUNDING_TOLERANCE`]).
    Fingerprint,
    /// Outcomes after training (accuracy, perplexity, losses): chaotic training amplifies rounding, so they are
    /// held to their spread over seeds.
    Outcome,
    /// Wall-clock times: not compared.
    Time,
}

fn class(metric: &str) -> Class {
    if metric.ends_with("seconds") {
        Class::Time
    } else if metric.starts_with("step") && metric[4..].starts_with(|c: char| c.is_ascii_digit()) {
        Class::Fingerprint
    } else if ["forward_passes_per_step", "backward_passes_per_step", "extra_memory_bytes", "skipped_steps"].contains(&metric) {
        Class::Exact
    } else {
        Class::Outcome
    }
}

/// Relative tolerance of the fingerprint metrics: far above what thread counts, CPU kernels (AVX2 vs AVX-512) and
/// build profiles change in the first steps, far below what a method change moves (README, "Regression").
pub const ROUNDING_TOLERANCE: f64 = 1e-3;

/// Seed spreads of the outcome metrics are multiplied by this for their tolerance.
pub const SPREAD_FACTOR: f64 = 3.0;

/// Expectations from a calibration sweep (the same profile over several seeds): the rows of `seed`, each with its
/// tolerance: exact, rounding-relative for the fingerprint, `SPREAD_FACTOR` × the standard deviation over the
/// calibration seeds (at least `floor`) for outcomes.
pub fn expectations(calibration: &Path, seed: u64, floor: f64, out: &Path) -> Result<()> {
    let rows = rows(calibration)?;
    let mut spread: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in &rows {
        spread.entry((r.method.clone(), r.set.clone(), r.metric.clone())).or_default().push(r.value);
    }
    let seeds: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.seed).collect();
    if seeds.len() < 3 {
        bail!("{}: {} seed(s); a spread needs at least 3", calibration.display(), seeds.len());
    }
    let mut cols: [Vec<String>; 8] = Default::default();
    let (mut seed_col, mut value, mut tol, mut relative) = (vec![], vec![], vec![], vec![]);
    for r in rows.iter().filter(|r| r.seed == seed) {
        let (t, rel) = match class(&r.metric) {
            Class::Time => continue,
            Class::Exact => (0.0, false),
            Class::Fingerprint => (ROUNDING_TOLERANCE, true),
            Class::Outcome => {
                let v = &spread[&(r.method.clone(), r.set.clone(), r.metric.clone())];
                ((SPREAD_FACTOR * tram_stats::std_dev(v)).max(floor * r.value.abs().max(1e-12)), false)
            }
        };
        for (c, x) in cols.iter_mut().zip([&r.experiment, &r.profile, &r.run_id, &r.method, &r.set, &r.domain, &r.metric, &r.metric]) {
            c.push(x.clone());
        }
        seed_col.push(r.seed);
        value.push(r.value);
        tol.push(t);
        relative.push(rel);
    }
    if value.is_empty() {
        bail!("{}: no run of seed {seed}", calibration.display());
    }
    let [e, p, id, m, set, domain, metric, _] = cols;
    let mut df = DataFrame::new(vec![
        Column::new("experiment".into(), e),
        Column::new("profile".into(), p),
        Column::new("run_id".into(), id),
        Column::new("method".into(), m),
        Column::new("seed".into(), seed_col),
        Column::new("set".into(), set),
        Column::new("domain".into(), domain),
        Column::new("metric".into(), metric),
        Column::new("value".into(), value),
        Column::new("tolerance".into(), tol),
        Column::new("relative".into(), relative),
    ])?;
    crate::atomic::write_csv(out, &mut df)?;
    println!("wrote {} expectations from {} seeds to {}", df.height(), seeds.len(), out.display());
    Ok(())
}

/// Tolerances of an expectations file, by row: `(tolerance, relative)`.
fn tolerances(path: &Path, n: usize) -> Result<Vec<(f64, bool)>> {
    let df = read_csv(path)?;
    let (Ok(t), Ok(r)) = (df.column("tolerance"), df.column("relative")) else {
        bail!("{}: no `tolerance` and `relative` columns; write expectations with `tram expectations`", path.display())
    };
    let t: Vec<Option<f64>> = t.cast(&DataType::Float64)?.f64()?.into_iter().collect();
    let r: Vec<Option<bool>> = r.cast(&DataType::Boolean)?.bool()?.into_iter().collect();
    (0..n)
        .map(|i| match (t.get(i).copied().flatten(), r.get(i).copied().flatten()) {
            (Some(t), Some(r)) if t >= 0.0 => Ok((t, r)),
            _ => bail!("{} line {}: tolerance or relative missing or invalid", path.display(), i + 2),
        })
        .collect()
}

/// Checks every expected row's metric in `actual` within the row's tolerance.
pub fn check(actual: &Path, expected: &Path) -> Result<()> {
    let got: BTreeMap<(String, String, String), f64> =
        rows(actual)?.into_iter().map(|r| ((r.run_id, r.set, r.metric), r.value)).collect();
    let want = rows(expected)?;
    if want.is_empty() {
        bail!("{} holds no expectation: a check against nothing proves nothing", expected.display());
    }
    let tol = tolerances(expected, want.len())?;
    let (mut passed, mut failed) = (0, 0);
    for (r, (tol, relative)) in want.iter().zip(tol) {
        let key = (r.run_id.clone(), r.set.clone(), r.metric.clone());
        let ok = match got.get(&key) {
            None => {
                println!("MISSING {} {} {}", r.run_id, r.set, r.metric);
                false
            }
            Some(&v) => {
                let bound = if relative { tol * r.value.abs() } else { tol };
                let ok = (v - r.value).abs() <= bound || (v.is_nan() && r.value.is_nan());
                if !ok {
                    println!(
                        "DIFF    {} {} {}: expected {} got {} (tolerance {bound:.3e})",
                        r.run_id, r.set, r.metric, r.value, v
                    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tram-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const HEAD: &str = "experiment,profile,run_id,method,seed,set,domain,metric,value\n";

    #[test]
    fn bad_csvs_are_named_not_read_as_nan() {
        let wide = write("wide.csv", "method,seeds,google (in-domain)\nSGD,3,68.50±5.61\n");
        assert!(rows(&wide).unwrap_err().to_string().contains("no column `experiment`"));
        let text = write("text.csv", &format!("{HEAD}t,q,sam-s0,sam,0,g,in-domain,accuracy,high\n"));
        let err = format!("{:#}", rows(&text).unwrap_err());
        assert!(err.contains("line 2") && err.contains("`high` is not a number"), "{err}");
        let empty = write("empty.csv", "experiment,profile,run_id,method,seed,set,domain,metric,value,tolerance,relative\n");
        let ok = write("ok.csv", &format!("{HEAD}t,q,sam-s0,sam,0,g,in-domain,accuracy,0.5\n"));
        assert!(check(&ok, &empty).unwrap_err().to_string().contains("holds no expectation"));
        assert!(check(&ok, &ok).unwrap_err().to_string().contains("no `tolerance`"));
    }

    #[test]
    fn expectations_hold_outcomes_to_their_seed_spread_and_the_fingerprint_to_rounding() {
        let mut cal = HEAD.to_string();
        for (seed, acc, loss) in [(0, 0.50, 2.0), (1, 0.52, 2.5), (2, 0.48, 3.0)] {
            cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},g,in-domain,accuracy,{acc}\n"));
            cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,step0_loss,{loss}\n"));
            cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,forward_passes_per_step,2\n"));
            cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,train_seconds,{seed}\n"));
        }
        let cal = write("cal.csv", &cal);
        let expected = cal.with_file_name("expected.csv");
        expectations(&cal, 0, 1e-6, &expected).unwrap();
        let text = std::fs::read_to_string(&expected).unwrap();
        assert_eq!(text.lines().count(), 4, "header + 3 rows (times are not expected): {text}");
        // sd of (0.50, 0.52, 0.48) is 0.02: tolerance 0.06.
        let run = |acc: f64, loss: f64, passes: f64| {
            write(
                "run.csv",
                &format!(
                    "{HEAD}t,q,sam-s0,sam,0,g,in-domain,accuracy,{acc}\nt,q,sam-s0,sam,0,,,step0_loss,{loss}\n\
                     t,q,sam-s0,sam,0,,,forward_passes_per_step,{passes}\n"
                ),
            )
        };
        assert!(check(&run(0.55, 2.0015, 2.0), &expected).is_ok(), "within the spread and rounding");
        assert!(check(&run(0.57, 2.0, 2.0), &expected).is_err(), "beyond 3 sd of the seeds");
        assert!(check(&run(0.5, 2.003, 2.0), &expected).is_err(), "the fingerprint moved beyond rounding");
        assert!(check(&run(0.5, 2.0, 3.0), &expected).is_err(), "a count changed");
    }
}
