//! `tram check` (a long CSV against expectations, each row within its own tolerance: the CI regression check) and
//! `tram expectations` (the expectations from a calibration sweep over several seeds).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use polars::prelude::*;

use crate::atomic::read_csv;
use crate::long_csv;

/// How the regression check compares a metric (see [`expectations`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Counts and sizes the code determines (passes per step, memory, skipped steps, examples): exactly.
    Exact,
    /// The first step's numbers and the early learning rates, to a relative tolerance: what rounding barely
    /// touches but a change of method, hyperparameter, schedule, data or model moves.
    Fingerprint(f64),
    /// Outcomes after training (accuracy, perplexity, losses, later steps): chaotic training amplifies rounding,
    /// so they are held to their spread over seeds.
    Outcome,
    /// Wall-clock times: not compared.
    Time,
}

/// Relative tolerance of the first step's loss and of the learning rates: one vs two threads and AVX2 vs AVX-512
/// kernels move them by at most 1.2e-6 (docs/regression.md).
pub const FORWARD_TOLERANCE: f64 = 1e-4;

/// Relative tolerance of the first step's gradient quantities (‖g‖, ‖ε‖, the loss at θ + ε) and of its divergence:
/// the backward kernels of AVX2 and AVX-512 differ by up to 1.6e-3 there (batch norm over 1×1 feature maps amplifies
/// their rounding); the divergence, a sum of differences of nearly equal log-probabilities, moved 4.9e-4 relative
/// between an Intel Xeon and an AMD Zen 4 with the same build (Table 5 quick, TRAM-x, d = 1.17e-4). A 20% change of
/// SAM's ρ moves ‖ε‖ by 20%, of TRAM-x's σ the divergence by about 44%.
pub const GRADIENT_TOLERANCE: f64 = 1e-2;

fn class(metric: &str) -> Class {
    match metric {
        m if m.ends_with("seconds") => Class::Time,
        m if m.ends_with("_lr") || m == "step0_loss" || m == "noise_sigma" => Class::Fingerprint(FORWARD_TOLERANCE),
        "step0_grad_norm" | "step0_eps_norm" | "step0_perturbed_loss" | "step0_divergence" => {
            Class::Fingerprint(GRADIENT_TOLERANCE)
        }
        "forward_passes_per_step"
        | "backward_passes_per_step"
        | "extra_memory_bytes"
        | "skipped_steps"
        | "examples" => Class::Exact,
        _ => Class::Outcome,
    }
}

/// Outcomes are held to the two-sided prediction interval of one more seed at this level (Student's t over the
/// calibration seeds): training on another machine behaves like another seed (docs/regression.md).
pub const PREDICTION_LEVEL: f64 = 0.999;

/// Accuracies are also allowed this many binomial standard deviations of their evaluation set, √(p(1−p)/n): two
/// models of the same accuracy differ by that much on a finite set, and a seed's spread at CI scale can be
/// smaller (the same initial weights for every seed but the head).
pub const BINOMIAL_SDS: f64 = 3.0;

/// The tolerance of an outcome from its values over the calibration seeds: the half-width of the
/// [`PREDICTION_LEVEL`] prediction interval, t · sd · √(1 + 1/n).
fn prediction_half_width(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let t = tram_stats::student_t_quantile(0.5 + PREDICTION_LEVEL / 2.0, n - 1.0);
    t * tram_stats::std_dev(values) * (1.0 + 1.0 / n).sqrt()
}

/// Expectations from a calibration sweep (the same profile over several seeds), one row per row of `seed`'s runs:
/// counts exactly and the first step to rounding at `seed`'s value; outcomes at their mean over the seeds, within
/// the [`PREDICTION_LEVEL`] prediction interval of a new seed (at least [`BINOMIAL_SDS`] binomial standard
/// deviations for an accuracy, and `floor` relative to the value).
pub fn expectations(calibration: &Path, seed: u64, floor: f64, out: &Path) -> Result<()> {
    let rows = long_csv::read(calibration)?;
    let (experiment, profile) = sweep_of(calibration, &rows)?;
    tracing::info!("calibrating {experiment} (profile {profile})");
    let mut spread: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut examples: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in &rows {
        spread.entry((r.method.clone(), r.set.clone(), r.metric.clone())).or_default().push(r.value);
        if r.metric == "examples" {
            examples.insert((r.run_id.clone(), r.set.clone()), r.value);
        }
    }
    let seeds: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.seed).collect();
    if seeds.len() < 3 {
        bail!("{}: {} seed(s); a spread needs at least 3", calibration.display(), seeds.len());
    }
    let mut cols: [Vec<String>; 8] = Default::default();
    let (mut seed_col, mut value, mut tol, mut relative) = (vec![], vec![], vec![], vec![]);
    for r in rows.iter().filter(|r| r.seed == seed) {
        let (expected, t, rel) = match class(&r.metric) {
            Class::Time => continue,
            Class::Exact => (r.value, 0.0, false),
            Class::Fingerprint(t) => (r.value, t, true),
            Class::Outcome => {
                let v = &spread[&(r.method.clone(), r.set.clone(), r.metric.clone())];
                let mean = tram_stats::mean(v);
                let binomial = match examples.get(&(r.run_id.clone(), r.set.clone())) {
                    Some(&n) if r.metric == "accuracy" && n > 0.0 => {
                        BINOMIAL_SDS * (mean * (1.0 - mean) / n).max(0.0).sqrt()
                    }
                    _ => 0.0,
                };
                (mean, prediction_half_width(v).max(binomial).max(floor * mean.abs().max(1e-12)), false)
            }
        };
        for (c, x) in cols.iter_mut().zip([
            &r.experiment,
            &r.profile,
            &r.run_id,
            &r.method,
            &r.set,
            &r.domain,
            &r.metric,
            &r.metric,
        ]) {
            c.push(x.clone());
        }
        seed_col.push(r.seed);
        value.push(expected);
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

/// Tolerances of an expectations file's rows `want`: `(tolerance, relative)`. A tolerance is finite and positive;
/// 0 (an exact match) only for what the code counts exactly ([`Class::Exact`]): any other zero would fail a rerun
/// whose rounding differs, or pass only by chance.
fn tolerances(path: &Path, want: &[long_csv::Row]) -> Result<Vec<(f64, bool)>> {
    let df = read_csv(path)?;
    let (Ok(t), Ok(r)) = (df.column("tolerance"), df.column("relative")) else {
        bail!("{}: no `tolerance` and `relative` columns; write expectations with `tram expectations`", path.display())
    };
    let t: Vec<Option<f64>> = t.cast(&DataType::Float64)?.f64()?.into_iter().collect();
    let r: Vec<Option<bool>> = r.cast(&DataType::Boolean)?.bool()?.into_iter().collect();
    let hint = "write expectations with `tram expectations`";
    want.iter()
        .enumerate()
        .map(|(i, row)| match (t.get(i).copied().flatten(), r.get(i).copied().flatten()) {
            (Some(t), Some(r)) if t.is_finite() && t > 0.0 => Ok((t, r)),
            (Some(t), Some(r)) if t == 0.0 && class(&row.metric) == Class::Exact => Ok((t, r)),
            (Some(0.0), Some(_)) => bail!(
                "{} line {}: tolerance 0 for {}, which is not a count; only counts are matched exactly; {hint}",
                path.display(),
                i + 2,
                row.metric
            ),
            (Some(t), Some(_)) => {
                bail!("{} line {}: tolerance {t} is not a finite positive number; {hint}", path.display(), i + 2)
            }
            _ => bail!("{} line {}: tolerance or relative missing or invalid", path.display(), i + 2),
        })
        .collect()
}

/// The one (experiment, profile) the rows of `path` belong to: calibrations and checks compare one sweep.
fn sweep_of(path: &Path, rows: &[long_csv::Row]) -> Result<(String, String)> {
    let sweeps: std::collections::BTreeSet<(&str, &str)> =
        rows.iter().map(|r| (r.experiment.as_str(), r.profile.as_str())).collect();
    match sweeps.iter().collect::<Vec<_>>()[..] {
        [(e, p)] => Ok((e.to_string(), p.to_string())),
        [] => bail!("{} holds no row", path.display()),
        ref many => bail!(
            "{} mixes {} sweeps ({}); give one experiment and profile at a time",
            path.display(),
            many.len(),
            many.iter().map(|(e, p)| format!("{e}/{p}")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Checks every expected row's metric in `actual` within the row's tolerance.
pub fn check(actual: &Path, expected: &Path) -> Result<()> {
    let got_rows = long_csv::read(actual)?;
    let want = long_csv::read(expected)?;
    if want.is_empty() {
        bail!("{} holds no expectation: a check against nothing proves nothing", expected.display());
    }
    let (want_sweep, got_sweep) = (sweep_of(expected, &want)?, sweep_of(actual, &got_rows)?);
    if want_sweep != got_sweep {
        bail!(
            "{} holds expectations of {}/{}, but {} holds results of {}/{}: check a sweep against its own",
            expected.display(),
            want_sweep.0,
            want_sweep.1,
            actual.display(),
            got_sweep.0,
            got_sweep.1
        );
    }
    let got: BTreeMap<(String, String, String), f64> =
        got_rows.into_iter().map(|r| ((r.run_id, r.set, r.metric), r.value)).collect();
    let tol = tolerances(expected, &want)?;
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
                let ok = (v - r.value).abs() <= bound;
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
    use std::path::PathBuf;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tram-regress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const HEAD: &str = "experiment,profile,run_id,method,seed,set,domain,metric,value\n";

    #[test]
    fn a_check_needs_expectations_with_tolerances() {
        let empty =
            write("empty.csv", "experiment,profile,run_id,method,seed,set,domain,metric,value,tolerance,relative\n");
        let ok = write("ok.csv", &format!("{HEAD}t,q,sam-s0,sam,0,g,in-domain,accuracy,0.5\n"));
        assert!(check(&ok, &empty).unwrap_err().to_string().contains("holds no expectation"));
        assert!(check(&ok, &ok).unwrap_err().to_string().contains("no `tolerance`"));
        let exp = |tol: &str| {
            let head = "experiment,profile,run_id,method,seed,set,domain,metric,value,tolerance,relative";
            write(
                &format!("tol-{tol}.csv"),
                &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,accuracy,0.9,{tol},false\n"),
            )
        };
        for bad in ["inf", "NaN", "-0.1"] {
            let err = check(&ok, &exp(bad)).unwrap_err().to_string();
            assert!(err.contains("line 2") && err.contains("is not a finite positive number"), "{bad}: {err}");
        }
        // An accuracy held to 0 would pass only a bit-equal rerun; counts are the one exact class.
        let err = check(&ok, &exp("0")).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("tolerance 0 for accuracy, which is not a count"), "{err}");
        let count =
            |v: u32| write(&format!("count-{v}.csv"), &format!("{HEAD}t,q,sam-s0,sam,0,g,in-domain,examples,{v}\n"));
        let head = "experiment,profile,run_id,method,seed,set,domain,metric,value,tolerance,relative";
        let exact = write("exact.csv", &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,examples,334,0,false\n"));
        assert!(check(&count(334), &exact).is_ok());
        assert!(check(&count(333), &exact).is_err(), "a count is matched exactly");
        assert!(check(&ok, &exp("0.5")).is_ok(), "0.5 within 0.5 of 0.9");
        let other = write("other.csv", &format!("{HEAD}u,q,sam-s0,sam,0,g,in-domain,accuracy,0.9\n"));
        let err = check(&other, &exp("0.5")).unwrap_err().to_string();
        assert!(err.contains("expectations of t/q") && err.contains("results of u/q"), "{err}");
    }

    #[test]
    fn expectations_calibrate_one_sweep_of_unique_finite_rows() {
        let mut text = HEAD.to_string();
        for seed in 0..3 {
            text.push_str(&format!("t,q,sam-s{seed},sam,{seed},g,in-domain,accuracy,0.5\n"));
        }
        let out = std::env::temp_dir().join(format!("tram-regress-out-{}.csv", std::process::id()));
        let mixed = write("mixed.csv", &format!("{text}u,q,sam-s0,sam,0,g,in-domain,accuracy,0.5\n"));
        let err = expectations(&mixed, 0, 1e-6, &out).unwrap_err().to_string();
        assert!(err.contains("mixes 2 sweeps (t/q, u/q)"), "{err}");
        let doubled = write("doubled.csv", &format!("{text}{}", &text[HEAD.len()..]));
        assert!(format!("{:#}", expectations(&doubled, 0, 1e-6, &out).unwrap_err()).contains("are both run sam-s0"));
        let nan = write("nan-cal.csv", &format!("{text}t,q,sam-s1,sam,1,g,in-domain,eval_loss,NaN\n"));
        assert!(format!("{:#}", expectations(&nan, 0, 1e-6, &out).unwrap_err()).contains("not a finite number"));
        assert!(!out.exists(), "nothing written");
    }

    #[test]
    fn expectations_hold_outcomes_to_a_new_seeds_prediction_interval_and_the_fingerprint_to_rounding() {
        let calibrate = |name: &str, examples: u32| {
            let mut cal = HEAD.to_string();
            for (seed, acc, loss) in [(0, 0.50, 2.0), (1, 0.52, 2.5), (2, 0.48, 3.0), (3, 0.51, 2.0), (4, 0.49, 2.0)] {
                cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},g,in-domain,accuracy,{acc}\n"));
                cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},g,in-domain,examples,{examples}\n"));
                cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,step0_loss,{loss}\n"));
                cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,forward_passes_per_step,2\n"));
                cal.push_str(&format!("t,q,sam-s{seed},sam,{seed},,,train_seconds,{seed}\n"));
            }
            let cal = write(&format!("{name}-cal.csv"), &cal);
            let expected = cal.with_file_name(format!("{name}-expected.csv"));
            expectations(&cal, 0, 1e-6, &expected).unwrap();
            expected
        };
        let expected = calibrate("large", 10_000);
        let text = std::fs::read_to_string(&expected).unwrap();
        assert_eq!(text.lines().count(), 5, "header + 4 rows (times are not expected): {text}");
        // Accuracy: the mean 0.50 of the seeds, ± t(0.9995, 4) · sd · √(1 + 1/5) = 8.610 · 0.01581 · 1.0954 = 0.1491
        // (3 binomial sd of 10,000 examples are only 0.015); seed 0's values for the rest.
        let df = read_csv(&expected).unwrap();
        let tol = df.column("tolerance").unwrap().f64().unwrap().get(0).unwrap();
        assert!((tol - 0.1491).abs() < 2e-4, "{tol}");
        let run = |acc: f64, loss: f64, passes: f64| {
            write(
                "run.csv",
                &format!(
                    "{HEAD}t,q,sam-s0,sam,0,g,in-domain,accuracy,{acc}\nt,q,sam-s0,sam,0,g,in-domain,examples,10000\n\
                     t,q,sam-s0,sam,0,,,step0_loss,{loss}\nt,q,sam-s0,sam,0,,,forward_passes_per_step,{passes}\n"
                ),
            )
        };
        assert!(check(&run(0.64, 2.00015, 2.0), &expected).is_ok(), "within the interval and rounding");
        assert!(check(&run(0.66, 2.0, 2.0), &expected).is_err(), "beyond a new seed's interval");
        assert!(check(&run(0.5, 2.0003, 2.0), &expected).is_err(), "the first step's loss moved beyond rounding");
        assert!(check(&run(0.5, 2.0, 3.0), &expected).is_err(), "a count changed");
        // On 25 examples, 3 binomial sd (0.30) exceed the seeds' interval.
        let small = calibrate("small", 25);
        let df = read_csv(&small).unwrap();
        let tol = df.column("tolerance").unwrap().f64().unwrap().get(0).unwrap();
        assert!((tol - 0.30).abs() < 1e-9, "{tol}");
    }
}
