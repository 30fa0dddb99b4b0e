//! Every function against the values SciPy wrote into `tests/fixtures/scipy.json`
//! (`reference/scipy_reference.py`; SciPy is not needed to run this test).
//!
//! Deviations are relative, `|a − b| / max(|a|, |b|)` (0 when equal). Each family has a tolerance, 1e-10 unless a
//! comment says why it is looser, and the test prints the largest deviation it measured per family
//! (`cargo test -p tram-stats --test scipy_parity -- --nocapture`).

use std::collections::HashMap;

use serde_json::Value;
use tram_stats::{
    ci95_half_width, ks_2samp, kstwo_sf, mean, median, paired_difference, pearsonr, smirnov_sf, std_dev,
    student_t_quantile, summarize, wilcoxon, wilcoxon_counts, wilcoxon_differences, Alternative, KsMethod, Wilcoxon,
    WilcoxonMethod, WilcoxonMode,
};

const DEFAULT_TOL: f64 = 1e-10;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scipy.json");
    let text = std::fs::read_to_string(path).expect("fixture present (run reference/scipy_reference.py)");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn cases<'a>(fx: &'a Value, key: &str) -> &'a Vec<Value> {
    fx[key].as_array().unwrap_or_else(|| panic!("fixture has no {key}"))
}

/// Samples by name: the stored ones, plus the large "weyl" ones rebuilt from their recipe.
fn samples(fx: &Value) -> HashMap<String, Vec<f64>> {
    let mut out: HashMap<String, Vec<f64>> = fx["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(f).collect()))
        .collect();
    for (name, g) in fx["generated"].as_object().unwrap() {
        let (n, alpha, c) = (g["n"].as_u64().unwrap(), f(&g["alpha"]), f(&g["c"]));
        let xs: Vec<f64> = (0..n)
            .map(|i| {
                let u = ((i + 1) as f64 * alpha) % 1.0;
                u + c * u * (1.0 - u)
            })
            .collect();
        let sum: f64 = xs.iter().sum();
        assert!(rel(sum, f(&g["sum"])) < 1e-12, "{name}: rebuilt sample differs (sum {sum} vs {})", g["sum"]);
        out.insert(name.clone(), xs);
    }
    out
}

/// Largest deviation in a family, and the case that reached it.
struct Worst {
    family: &'static str,
    tol: f64,
    dev: f64,
    case: String,
    count: usize,
}

impl Worst {
    fn new(family: &'static str, tol: f64) -> Self {
        Worst { family, tol, dev: 0.0, case: String::new(), count: 0 }
    }

    fn check(&mut self, case: &str, what: &str, got: f64, want: f64) {
        let d = rel(got, want);
        assert!(
            d <= self.tol,
            "{}: {case} {what}: got {got:e}, SciPy {want:e} (relative deviation {d:e} > {:e})",
            self.family,
            self.tol
        );
        if d >= self.dev {
            self.dev = d;
            self.case = format!("{case} {what}");
        }
        self.count += 1;
    }

    fn report(&self) {
        println!("{:<14} {:>4} checks  max rel. deviation {:.2e}  ({})", self.family, self.count, self.dev, self.case);
    }
}

fn alt(v: &Value) -> Alternative {
    s(v).parse().unwrap()
}

#[test]
fn the_fixture_holds_every_case() {
    let fx = fixture();
    for (key, expected) in [
        ("summary", 5),
        ("paired", 3),
        ("wilcoxon", 57),
        ("wilcoxon_counts", 348),
        ("ks_2samp", 63),
        ("kstwo_sf", 266),
        ("smirnov_sf", 88),
        ("pearsonr", 18),
    ] {
        assert_eq!(cases(&fx, key).len(), expected, "fixture family {key}");
    }
    // Each Wilcoxon method and each KS method is exercised.
    let w: Vec<&str> = cases(&fx, "wilcoxon").iter().map(|c| s(&c["method"])).collect();
    for m in ["exact", "permutation", "asymptotic"] {
        assert!(w.iter().filter(|x| **x == m).count() >= 6, "wilcoxon {m}");
    }
    // Real k/n accuracies with tied and with zero differences, in both modes, and each method of "auto" on them.
    let wc = cases(&fx, "wilcoxon_counts");
    for mode in ["auto", "exact"] {
        let of_mode = || wc.iter().filter(|c| s(&c["mode"]) == mode);
        assert!(of_mode().filter(|c| c["ties"].as_bool().unwrap()).count() >= 100, "{mode}: ties");
        assert!(of_mode().filter(|c| c["n_zero"].as_u64().unwrap() > 0).count() >= 30, "{mode}: zeros");
    }
    for m in ["exact", "permutation", "asymptotic"] {
        assert!(wc.iter().any(|c| s(&c["mode"]) == "auto" && s(&c["method"]) == m), "counts, auto: {m}");
    }
    let k: Vec<&str> = cases(&fx, "ks_2samp").iter().map(|c| s(&c["method_used"])).collect();
    for m in ["exact", "asymp"] {
        assert!(k.iter().filter(|x| **x == m).count() >= 12, "ks {m}");
    }
}

#[test]
fn summaries_match_numpy_and_scipy() {
    let fx = fixture();
    let smp = samples(&fx);
    // mean / std / median: NumPy sums pairwise, this crate left to right; the CI also carries the t quantile.
    let mut w = Worst::new("summary", DEFAULT_TOL);
    let mut t = Worst::new("t quantile", DEFAULT_TOL);
    for c in cases(&fx, "summary") {
        let name = s(&c["name"]);
        let x = &smp[s(&c["sample"])];
        assert_eq!(x.len() as u64, c["n"].as_u64().unwrap());
        w.check(name, "mean", mean(x), f(&c["mean"]));
        w.check(name, "std", std_dev(x), f(&c["std"]));
        w.check(name, "median", median(x), f(&c["median"]));
        w.check(name, "ci95", ci95_half_width(x), f(&c["ci95"]));
        let sm = summarize(x);
        assert_eq!((sm.mean, sm.std, sm.ci95), (mean(x), std_dev(x), ci95_half_width(x)));
        t.check(name, "t.ppf(0.975, n-1)", student_t_quantile(0.975, (x.len() - 1) as f64), f(&c["t975"]));
    }
    let mut p = Worst::new("paired", DEFAULT_TOL);
    for c in cases(&fx, "paired") {
        let name = s(&c["name"]);
        let r = paired_difference(&smp[s(&c["a"])], &smp[s(&c["b"])]).unwrap();
        assert_eq!(r.n as u64, c["n"].as_u64().unwrap());
        p.check(name, "mean_diff", r.mean_diff, f(&c["mean_diff"]));
        p.check(name, "std", r.std, f(&c["std"]));
        p.check(name, "ci95", r.ci95, f(&c["ci95"]));
        p.check(name, "ttest_rel CI half-width", r.ci95, f(&c["ttest_rel_ci95"]));
    }
    w.report();
    t.report();
    p.report();
}

fn mode(c: &Value) -> WilcoxonMode {
    match s(&c["mode"]) {
        "auto" => WilcoxonMode::Auto,
        "exact" => WilcoxonMode::Exact,
        "asymptotic" => WilcoxonMode::Asymptotic,
        other => panic!("unknown mode {other}"),
    }
}

/// The method SciPy used, the non-zero count and the statistic (a half-integer rank sum: exact) of one case.
fn check_wilcoxon_shape(c: &Value, r: &Wilcoxon, n_total: usize) {
    let name = s(&c["name"]);
    let method = match s(&c["method"]) {
        "exact" => WilcoxonMethod::Exact,
        "permutation" => WilcoxonMethod::Permutation,
        "asymptotic" => WilcoxonMethod::Asymptotic,
        other => panic!("unknown method {other}"),
    };
    assert_eq!(r.method, method, "{name}");
    assert_eq!(r.n_nonzero, n_total - c["n_zero"].as_u64().unwrap() as usize, "{name}");
    assert_eq!(r.statistic, f(&c["statistic"]), "{name} statistic");
}

#[test]
fn wilcoxon_matches_scipy() {
    let fx = fixture();
    let smp = samples(&fx);
    let mut w = Worst::new("wilcoxon", DEFAULT_TOL);
    for c in cases(&fx, "wilcoxon") {
        let name = s(&c["name"]);
        let a = alt(&c["alternative"]);
        let x = &smp[s(&c["x"])];
        let r = match (c["y"].as_str(), mode(c)) {
            (Some(y), WilcoxonMode::Auto) => wilcoxon(x, &smp[y], a).unwrap(),
            (Some(y), m) => {
                let d: Vec<f64> = x.iter().zip(&smp[y]).map(|(a, b)| a - b).collect();
                wilcoxon_differences(&d, a, m).unwrap()
            }
            (None, m) => wilcoxon_differences(x, a, m).unwrap(),
        };
        check_wilcoxon_shape(c, &r, x.len());
        w.check(name, "pvalue", r.pvalue, f(&c["pvalue"]));
    }
    w.report();
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|k| k.as_u64().unwrap()).collect()
}

#[test]
fn wilcoxon_on_counts_matches_scipy_with_ties_and_zeros() {
    let fx = fixture();
    let mut w = Worst::new("wilcoxon k/n", DEFAULT_TOL);
    let mut split_by_floats = 0;
    for c in cases(&fx, "wilcoxon_counts") {
        let name = s(&c["name"]);
        let (a, m) = (alt(&c["alternative"]), mode(c));
        let sample = &fx["count_samples"][s(&c["counts"])];
        let rows = |k: &str| sample[k].as_array().unwrap().iter().map(counts).collect::<Vec<_>>();
        let (x, y, sizes) = (rows("x"), rows("y"), counts(&sample["sizes"]));
        let r = wilcoxon_counts(&x, &y, &sizes, a, m).unwrap();
        check_wilcoxon_shape(c, &r, x.len());
        w.check(name, "pvalue", r.pvalue, f(&c["pvalue"]));
        if let [n] = sizes[..] {
            // One set: the differences of k/n accuracies, (k − k′)/n, as SciPy was given them.
            let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| (a[0] as f64 - b[0] as f64) / n as f64).collect();
            let rd = wilcoxon_differences(&d, a, m).unwrap();
            check_wilcoxon_shape(c, &rd, d.len());
            w.check(name, "pvalue of (k − k′)/n", rd.pvalue, f(&c["pvalue"]));
            // What the ties are for: k/n − k′/n rounds equal differences apart.
            let (xa, xb): (Vec<f64>, Vec<f64>) =
                x.iter().zip(&y).map(|(a, b)| (a[0] as f64 / n as f64, b[0] as f64 / n as f64)).unzip();
            if m == WilcoxonMode::Auto && wilcoxon(&xa, &xb, a).unwrap().pvalue != r.pvalue {
                split_by_floats += 1;
            }
        }
    }
    println!("k/n − k′/n splits ties in {split_by_floats} one-set cases (auto)");
    assert!(split_by_floats >= 30, "the fixture holds the ties that k/n − k′/n splits ({split_by_floats} cases)");
    w.report();
}

#[test]
fn ks_2samp_matches_scipy() {
    let fx = fixture();
    let smp = samples(&fx);
    let mut exact = Worst::new("ks exact", DEFAULT_TOL);
    let mut asymp = Worst::new("ks asymp", DEFAULT_TOL);
    for c in cases(&fx, "ks_2samp") {
        let name = s(&c["name"]);
        let method = match s(&c["method"]) {
            "auto" => KsMethod::Auto,
            "exact" => KsMethod::Exact,
            "asymp" => KsMethod::Asymp,
            other => panic!("unknown method {other}"),
        };
        let r = ks_2samp(&smp[s(&c["x"])], &smp[s(&c["y"])], alt(&c["alternative"]), method).unwrap();
        let (used, w) = match s(&c["method_used"]) {
            "exact" => (KsMethod::Exact, &mut exact),
            _ => (KsMethod::Asymp, &mut asymp),
        };
        assert_eq!(r.method, used, "{name}");
        w.check(name, "statistic", r.statistic, f(&c["statistic"]));
        w.check(name, "pvalue", r.pvalue, f(&c["pvalue"]));
    }
    exact.report();
    asymp.report();
}

#[test]
fn kolmogorov_distributions_match_scipy() {
    let fx = fixture();
    let mut k = Worst::new("kstwo.sf", DEFAULT_TOL);
    for c in cases(&fx, "kstwo_sf") {
        let (n, x) = (c["n"].as_u64().unwrap(), f(&c["x"]));
        k.check(&format!("n={n} x={x}"), "sf", kstwo_sf(n, x), f(&c["sf"]));
    }
    let mut sm = Worst::new("smirnov", DEFAULT_TOL);
    for c in cases(&fx, "smirnov_sf") {
        let (n, x) = (c["n"].as_u64().unwrap(), f(&c["x"]));
        sm.check(&format!("n={n} x={x}"), "sf", smirnov_sf(n, x), f(&c["sf"]));
    }
    k.report();
    sm.report();
}

#[test]
fn pearsonr_matches_scipy() {
    let fx = fixture();
    let smp = samples(&fx);
    let mut w = Worst::new("pearsonr", DEFAULT_TOL);
    for c in cases(&fx, "pearsonr") {
        let name = s(&c["name"]);
        let r = pearsonr(&smp[s(&c["x"])], &smp[s(&c["y"])], alt(&c["alternative"])).unwrap();
        w.check(name, "r", r.r, f(&c["r"]));
        w.check(name, "pvalue", r.pvalue, f(&c["pvalue"]));
    }
    w.report();
}
