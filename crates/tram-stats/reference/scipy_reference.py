#!/usr/bin/env python3
"""Write the SciPy reference values that `tests/scipy_parity.rs` checks `tram-stats` against.

Every input is written into the fixture (hard-coded lists, seeded NumPy draws rounded to 6 decimals before SciPy
sees them, and the counts k/n of real accuracies read from the committed results/*-long.csv), except the very large KS samples, which are a "weyl" recipe both sides evaluate with the
same IEEE operations: u_i = ((i + 1) * alpha) % 1.0, x_i = u_i + c * u_i * (1.0 - u_i), i = 0..n-1 (the fixture
also stores sum(x) so that the Rust test can confirm it rebuilt the same sample).

Regenerate (from the repository root):

    /root/.cache/tram/venv/bin/pip install scipy
    /root/.cache/tram/venv/bin/python crates/tram-stats/reference/scipy_reference.py

SciPy is needed only here, never by the Rust crate or its tests.
"""

import csv
import json
import math
import pathlib
import sys
import warnings
from fractions import Fraction

import numpy as np
import scipy
from scipy import special, stats

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "scipy.json"
ALTERNATIVES = ["two-sided", "greater", "less"]

samples = {}


def draw(name, values):
    """Register a sample, rounded to 6 decimals so that the JSON text is short and exact."""
    arr = np.round(np.asarray(values, dtype=np.float64), 6)
    samples[name] = [float(v) for v in arr]
    return np.asarray(samples[name], dtype=np.float64)


def fixed(name, values):
    samples[name] = [float(v) for v in values]
    return np.asarray(samples[name], dtype=np.float64)


def names_of(arr):
    """The name a sample was registered under (the most recent one holding exactly these values)."""
    hits = [k for k, v in samples.items() if len(v) == len(arr) and np.array_equal(v, arr)]
    return hits[-1]


def weyl(n, alpha, c):
    out = np.empty(n)
    for i in range(n):
        u = ((i + 1) * alpha) % 1.0
        out[i] = u + c * u * (1.0 - u)
    return out


rng = np.random.default_rng(20231005)

# ---------------------------------------------------------------- summaries and confidence intervals
summary = []
for name, vals in [
    ("n2", fixed("s_n2", [71.3, 72.9])),
    ("n3", fixed("s_n3", [71.3, 72.9, 70.4])),
    ("n5", draw("s_n5", rng.normal(70.0, 1.5, 5))),
    ("n20", draw("s_n20", rng.normal(70.0, 1.5, 20))),
    ("n100", draw("s_n100", rng.normal(0.0, 1.0, 100))),
]:
    n = len(vals)
    std = float(np.std(vals, ddof=1))
    summary.append({
        "name": name,
        "sample": "s_" + name,
        "n": n,
        "mean": float(np.mean(vals)),
        "std": std,
        "median": float(np.median(vals)),
        # scipy.stats.t.interval(0.95, n-1, loc=mean, scale=sem) is mean -/+ this.
        "ci95": float(stats.t.ppf(0.975, n - 1) * stats.sem(vals)),
        "t975": float(stats.t.ppf(0.975, n - 1)),
    })

paired = []
for name, a, b in [
    ("n3", fixed("p3_a", [80.1, 79.4, 80.6]), fixed("p3_b", [79.0, 79.9, 79.2])),
    ("n5", draw("p5_a", rng.normal(75, 1, 5)), draw("p5_b", rng.normal(74.5, 1, 5))),
    ("n10", draw("p10_a", rng.normal(75, 1, 10)), draw("p10_b", rng.normal(74.8, 1, 10))),
]:
    d = a - b
    n = len(d)
    paired.append({
        "name": name,
        "a": "p" + str(n) + "_a",
        "b": "p" + str(n) + "_b",
        "n": n,
        "mean_diff": float(np.mean(d)),
        "std": float(np.std(d, ddof=1)),
        "ci95": float(stats.t.ppf(0.975, n - 1) * stats.sem(d)),
        "ttest_rel_ci95": float(np.diff(stats.ttest_rel(a, b).confidence_interval(0.95))[0] / 2),
    })

# ---------------------------------------------------------------- Wilcoxon signed-rank
def wilcoxon_method(d):
    """The method scipy.stats.wilcoxon(method='auto') picks (SciPy 1.17.1's rules, unchanged since 1.15)."""
    nz = d[d != 0]
    has_ties = len(np.unique(np.abs(nz))) < len(nz)
    has_zeros = np.any(d == 0)
    if len(d) > 50:
        return "asymptotic"
    if not (has_ties or has_zeros):
        return "exact"
    if len(d) <= 13:
        return "permutation"
    return "asymptotic"


wilcoxon = []
w_inputs = [
    ("n8_all_positive", fixed("w8_pos", [0.5, 1.25, 2.0, 3.5, 4.0, 5.75, 6.0, 7.5]), None),
    ("n8_xy", fixed("w8_x", [80.2, 81.0, 79.5, 80.8, 81.3, 80.0, 79.9, 81.1]),
     fixed("w8_y", [79.6, 80.7, 79.9, 80.1, 80.2, 80.35, 79.05, 80.45])),
    ("n10", draw("w10", rng.normal(0.3, 1.0, 10)), None),
    ("n20", draw("w20", rng.normal(0.4, 1.0, 20)), None),
    ("n20_xy", draw("w20_x", rng.normal(70, 2, 20)), draw("w20_y", rng.normal(69.5, 2, 20))),
    ("n50", draw("w50", rng.normal(0.1, 1.0, 50)), None),
    ("n10_ties", fixed("w10_ties", [1.0, -2.0, 2.0, 3.0, 3.0, 3.0, 4.5, -1.0, 6.0, 7.0]), None),
    ("n12_zeros", fixed("w12_zeros", [0.0, 1.5, -0.5, 2.5, 0.0, 3.5, 4.0, -4.5, 5.0, 6.5, 7.0, 0.25]), None),
    ("n20_ties", fixed("w20_ties", [float(v) for v in rng.choice([-3, -2, -1, 1, 2, 3, 4, 5, 6, 7], 20)]), None),
    ("n20_zeros", fixed("w20_zeros", [float(v) for v in np.round(rng.normal(0.5, 1.0, 20), 1)]), None),
    ("n25_ties_zeros", fixed("w25_tz", [float(v) for v in rng.integers(-4, 9, 25)]), None),
    ("n60", draw("w60", rng.normal(0.2, 1.0, 60)), None),
]
# method="exact" on ties and zeros (the untied law of the non-zero count, R+ rounded: gh-19872) and
# method="asymptotic" on small tie-free samples.
w_modes = {
    "n10_ties": ("auto", "exact"),
    "n12_zeros": ("auto", "exact"),
    "n20_ties": ("auto", "exact"),
    "n20_zeros": ("auto", "exact"),
    "n25_ties_zeros": ("auto", "exact"),
    "n8_xy": ("auto", "asymptotic"),
    "n20": ("auto", "asymptotic"),
}
for name, x, y in w_inputs:
    xname, yname = names_of(x), (None if y is None else names_of(y))
    d = x if y is None else x - y
    for mode in w_modes.get(name, ("auto",)):
        method = wilcoxon_method(d) if mode == "auto" else mode
        for alt in ALTERNATIVES:
            args = (x,) if y is None else (x, y)
            res = stats.wilcoxon(*args, alternative=alt, method=mode)
            if mode == "auto":
                # The label is ours; confirm that SciPy's 'auto' gave what the named method gives.
                explicit = stats.PermutationMethod() if method == "permutation" else method
                assert res.pvalue == stats.wilcoxon(*args, alternative=alt, method=explicit).pvalue, (name, alt)
            wilcoxon.append({
                "name": f"{name}/{mode}/{alt}",
                "x": xname,
                "y": yname,
                "alternative": alt,
                "mode": mode,
                "method": method,
                "n_zero": int(np.sum(d == 0)),
                "statistic": float(res.statistic),
                "pvalue": float(res.pvalue),
            })

# Accuracies of real runs, as counts k of n on the same sets (8 seeds per method in Table 5, 16 in Table 3's
# power profile): paired differences with tied and zero values. SciPy sees each exact difference as the nearest
# float (in-domain: (k - k') / n); tram-stats gets the counts. The in-domain cases are every pair of Table 5's
# methods whose differences tie or vanish; the zero-shot averages (18 sets of different sizes) have neither but
# exercise the common denominator.
ROOT = pathlib.Path(__file__).resolve().parents[3]


def read_counts(csv_name):
    """(method, seed) -> {set: (k, n)} from a committed long CSV (accuracy and examples rows)."""
    rows = list(csv.DictReader(open(ROOT / "results" / csv_name)))
    acc, n, domain = {}, {}, {}
    for r in rows:
        key = (r["method"], int(r["seed"]))
        if r["metric"] == "accuracy":
            acc.setdefault(key, {})[r["set"]] = float(r["value"])
        elif r["metric"] == "examples":
            n.setdefault(key, {})[r["set"]] = int(float(r["value"]))
        domain[r["set"]] = r["domain"]
    counts = {}
    for key, sets in n.items():
        counts[key] = {}
        for s, size in sets.items():
            k = acc[key][s] * size
            assert abs(k - round(k)) < 1e-6, (csv_name, key, s, k)
            counts[key][s] = (round(k), size)
    in_domain = [s for s, d in domain.items() if d == "in-domain" and "(validation)" not in s]
    zero_shot = [s for s, d in domain.items() if d == "zero-shot" and s != "zs-avg"]
    return counts, in_domain, zero_shot


wilcoxon_counts = []
count_samples = {}  # by case: the counts x[seed][set], y[seed][set] and the sets' sizes


def counts_case(source, counts, a, b, sets):
    seeds = sorted(s for (m, s) in counts if m == a and (b, s) in counts)
    sizes = [counts[(a, seeds[0])][s][1] for s in sets]
    x = [[counts[(a, seed)][s][0] for s in sets] for seed in seeds]
    y = [[counts[(b, seed)][s][0] for s in sets] for seed in seeds]
    assert all(counts[(m, seed)][s][1] == n for m in (a, b) for seed in seeds for s, n in zip(sets, sizes))
    exact = [sum(Fraction(ka - kb, n) for ka, kb, n in zip(xs, ys, sizes)) / len(sizes) for xs, ys in zip(x, y)]
    d = np.array([float(v) for v in exact])
    if len(sets) == 1:
        assert list(d) == [(xs[0] - ys[0]) / sizes[0] for xs, ys in zip(x, y)]
    absd = [abs(v) for v in exact if v != 0]
    ties, zeros = len(set(absd)) < len(absd), any(v == 0 for v in exact)
    assert len(set(abs(v) for v in d if v != 0)) == len(set(absd)), "the nearest floats keep every tie apart"
    quantity = sets[0] if len(sets) == 1 else f"{len(sets)}-set average"
    case = f"{source} {a} vs {b} {quantity}"
    count_samples[case] = {"x": x, "y": y, "sizes": sizes}
    for mode in ("auto", "exact"):
        method = wilcoxon_method(d) if mode == "auto" else mode
        for alt in ALTERNATIVES:
            res = stats.wilcoxon(d, alternative=alt, method=mode)
            if mode == "auto":
                explicit = stats.PermutationMethod() if method == "permutation" else method
                assert res.pvalue == stats.wilcoxon(d, alternative=alt, method=explicit).pvalue, (a, b, alt)
            wilcoxon_counts.append({
                "name": f"{case}/{mode}/{alt}",
                "counts": case,
                "ties": ties,
                "alternative": alt,
                "mode": mode,
                "method": method,
                "n_zero": int(np.sum(d == 0)),
                "statistic": float(res.statistic),
                "pvalue": float(res.pvalue),
            })


t5, t5_in, t5_zs = read_counts("table5-embedded-long.csv")
t5_methods = sorted({m for m, _ in t5})
for i, a in enumerate(t5_methods):
    for b in t5_methods[i + 1:]:
        seeds = sorted(s for (m, s) in t5 if m == a and (b, s) in t5)
        dk = [t5[(a, s)][t5_in[0]][0] - t5[(b, s)][t5_in[0]][0] for s in seeds]
        nz = [abs(v) for v in dk if v != 0]
        if nz and (len(set(nz)) < len(nz) or len(nz) < len(dk)):
            counts_case("table5", t5, a, b, t5_in)
for b in ["asam", "sam", "tram-fisher", "tram-x"]:
    counts_case("table5", t5, "base", b, t5_zs)
t3, t3_in, t3_zs = read_counts("table3-power-long.csv")
counts_case("table3-power", t3, "tram-prev", "base", t3_in)
counts_case("table3-power", t3, "tram-prev", "base", t3_zs)

# ---------------------------------------------------------------- two-sample Kolmogorov-Smirnov
ks = []


def ks_case(name, xname, yname, alts=ALTERNATIVES, methods=("auto",)):
    x = np.asarray(samples[xname])
    y = np.asarray(samples[yname])
    for method in methods:
        for alt in alts:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = stats.ks_2samp(x, y, alternative=alt, method=method)
            fell_back = any("Switching to" in str(w.message) for w in caught)
            n1, n2 = len(x), len(y)
            if method == "asymp" or fell_back or (method == "auto" and max(n1, n2) > 10000):
                used = "asymp"
            else:
                used = "exact"
            ks.append({
                "name": f"{name}/{method}/{alt}",
                "x": xname,
                "y": yname,
                "alternative": alt,
                "method": method,
                "method_used": used,
                "statistic": float(res.statistic),
                "pvalue": float(res.pvalue),
            })


draw("k10_a", rng.normal(0, 1, 10))
draw("k12_a", rng.normal(0, 1, 12))
draw("k12_b", rng.normal(1.2, 1, 12))
draw("k15_a", rng.normal(0, 1, 15))
draw("k15_b", rng.normal(0.9, 1, 15))
draw("k20_a", rng.normal(0.4, 1, 20))
draw("k7_a", rng.normal(0, 1, 7))
draw("k13_a", rng.normal(0.8, 1.5, 13))
draw("k40_a", rng.normal(0, 1, 40))
draw("k50_a", rng.normal(0.5, 1, 50))
fixed("k12_int", [float(v) for v in rng.integers(0, 5, 12)])
fixed("k9_int", [float(v) for v in rng.integers(1, 6, 9)])
draw("k2000_a", rng.normal(0, 1, 2000))
draw("k3000_a", rng.normal(0, 1, 3000))
draw("k3000_b", rng.normal(0.1, 1, 3000))
draw("k3000_c", rng.normal(0.3, 1.1, 3000))

ks_case("n10_n12_same", "k10_a", "k12_a", methods=("auto", "asymp"))
ks_case("n10_n12_shift", "k10_a", "k12_b", methods=("auto", "asymp"))
ks_case("n15_n15_same", "k15_a", "k15_b", methods=("auto", "asymp"))
ks_case("n15_n15_shift", "k15_a", "k12_b")
ks_case("n10_n20", "k10_a", "k20_a")
ks_case("n7_n13", "k7_a", "k13_a")
ks_case("n40_n50", "k40_a", "k50_a", methods=("auto", "asymp"))
ks_case("ties_n12_n9", "k12_int", "k9_int")
ks_case("n2000_n3000_same", "k2000_a", "k3000_a", methods=("auto", "asymp"))
ks_case("n2000_n3000_shift01", "k2000_a", "k3000_b", methods=("auto", "asymp"))
ks_case("n2000_n3000_shift03", "k2000_a", "k3000_c", methods=("auto", "asymp"))

# Above MAX_AUTO_N = 10000: 'auto' uses the asymptotic (kstwo) distribution.
generated = {}  # recipes, written into the fixture
generated_arrays = {}  # the samples themselves, not written
for gname, n, alpha, c in [
    ("g12000_u", 12000, 0.6180339887498949, 0.0),
    ("g15000_c0008", 15000, 0.4142135623730951, 0.008),
    ("g15000_c004", 15000, 0.4142135623730951, 0.04),
    ("g15000_c012", 15000, 0.4142135623730951, 0.12),
]:
    arr = weyl(n, alpha, c)
    generated[gname] = {"n": n, "alpha": alpha, "c": c, "sum": float(np.sum(arr))}
    generated_arrays[gname] = arr


def ks_generated(name, gx, gy):
    x, y = generated_arrays[gx], generated_arrays[gy]
    for alt in ALTERNATIVES:
        res = stats.ks_2samp(x, y, alternative=alt)
        ks.append({
            "name": f"{name}/auto/{alt}",
            "x": gx,
            "y": gy,
            "alternative": alt,
            "method": "auto",
            "method_used": "asymp",
            "statistic": float(res.statistic),
            "pvalue": float(res.pvalue),
        })


ks_generated("n12000_n15000_c0008", "g12000_u", "g15000_c0008")
ks_generated("n12000_n15000_c004", "g12000_u", "g15000_c004")
ks_generated("n12000_n15000_c012", "g12000_u", "g15000_c012")

# The distribution behind the two-sided asymptotic p-value, on a grid that reaches each of its branches.
kstwo = []
for n in [1, 2, 3, 5, 10, 20, 50, 100, 140, 141, 500, 1200, 6667, 120000]:
    for x in [0.3 / n, 0.75 / n, 1.5 / n, 0.02, 0.05, 0.1, 0.2, 0.35, 0.49, 0.5, 0.7, 0.95, 1.0 - 0.5 / n]:
        if not (0.0 < x <= 1.0):
            continue
        kstwo.append({"n": n, "x": x, "sf": float(stats.kstwo.sf(x, n))})
    for z in [0.2, 0.5, 0.9, 1.2, 1.6, 2.5, 5.0]:
        x = z / math.sqrt(n)
        if 0.0 < x < 1.0:
            kstwo.append({"n": n, "x": x, "sf": float(stats.kstwo.sf(x, n))})

smirnov = []
for n in [1, 2, 5, 10, 50, 141, 1200, 6667]:
    for x in [0.0, 0.5 / n, 1.0 / n, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0 - 0.5 / n, 1.0]:
        smirnov.append({"n": n, "x": x, "sf": float(special.smirnov(n, x))})

# ---------------------------------------------------------------- Pearson correlation
pearson = []
base = rng.normal(0, 1, 30)
for name, x, y in [
    ("n2", fixed("r2_x", [1.0, 2.0]), fixed("r2_y", [3.5, 1.25])),
    ("n3", fixed("r3_x", [1.0, 2.0, 3.0]), fixed("r3_y", [2.0, 2.5, 4.5])),
    ("positive_n30", draw("r30_x", base), draw("r30_y", 0.8 * base + 0.6 * rng.normal(0, 1, 30))),
    ("negative_n30", draw("r30n_x", base), draw("r30n_y", -0.6 * base + 0.8 * rng.normal(0, 1, 30))),
    ("near_zero_n30", draw("r30z_x", base), draw("r30z_y", rng.normal(0, 1, 30))),
    ("strong_n500", draw("r500_x", rng.normal(0, 1, 500)), None),
]:
    if y is None:
        y = draw("r500_y", 0.9 * x + 0.3 * rng.normal(0, 1, 500))
    xname, yname = names_of(x), names_of(y)
    for alt in ALTERNATIVES:
        res = stats.pearsonr(x, y, alternative=alt)
        pearson.append({
            "name": f"{name}/{alt}",
            "x": xname,
            "y": yname,
            "alternative": alt,
            "r": float(res.statistic),
            "pvalue": float(res.pvalue),
        })

fixture = {
    "generator": "crates/tram-stats/reference/scipy_reference.py",
    "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__},
    "samples": samples,
    "generated": generated,
    "count_samples": count_samples,
    "summary": summary,
    "paired": paired,
    "wilcoxon": wilcoxon,
    "wilcoxon_counts": wilcoxon_counts,
    "ks_2samp": ks,
    "kstwo_sf": kstwo,
    "smirnov_sf": smirnov,
    "pearsonr": pearson,
}
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(fixture, indent=1) + "\n")
counts = {k: len(v) for k, v in fixture.items() if isinstance(v, list)}
print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {counts}")
