use super::*;
use tram_stats::WilcoxonMethod;
use tram_task::Domain;

fn run(method: &str, seed: u64, metric: Metric, in_domain: f64, zs: f64) -> Summary {
    let evals =
        vec![Summary::eval("a", Domain::InDomain, metric, in_domain), Summary::eval("b", Domain::ZeroShot, metric, zs)];
    Summary::fixture(method, seed, metric, evals)
}

#[test]
fn wilcoxon_over_eight_seeds_all_better_is_significant() {
    let mut s = vec![];
    for seed in 0..8 {
        s.push(run("base", seed, Metric::Accuracy, 0.5, 0.40 + 0.01 * seed as f64));
        s.push(run("tram-x", seed, Metric::Accuracy, 0.5, 0.42 + 0.01 * seed as f64 + 0.001 * seed as f64));
    }
    let c = compare("tram-x", "base", Quantity::ZsAvg, &s, &PerExample::new(), Metric::Accuracy).unwrap();
    assert_eq!(c.pairs, 8);
    // Every difference positive: the exact two-sided p is 2/2⁸.
    assert_eq!(c.wilcoxon_p, Some(2.0 / 256.0));
    assert!(c.significant() && c.a_better);
    let same = compare("tram-x", "base", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
    assert_eq!((same.wilcoxon_p, same.significant()), (Some(1.0), false), "identical values: no difference");
    let all = compare_all(
        &["base", "tram-x"].map(|m| toml::from_str(&format!("name = \"{m}\"")).unwrap()),
        &s,
        &PerExample::new(),
        Metric::Accuracy,
    );
    assert_eq!(all.len(), 4);
    assert!(verdict("tram-x", Quantity::ZsAvg, &all).starts_with("better than 1, worse than 0 of 1"));
    assert!(verdict("base", Quantity::ZsAvg, &all).starts_with("better than 0, worse than 1 of 1"));
}

#[test]
fn accuracy_differences_split_into_test_set_and_seed_parts() {
    // Four in-domain examples, three seeds; each run's accuracy is the mean of its correctness.
    let base = [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]];
    let tram = [[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]];
    let (mut s, mut pe) = (vec![], PerExample::new());
    for seed in 0..3 {
        for (m, c) in [("base", base[seed]), ("tram-x", tram[seed])] {
            s.push(run(m, seed as u64, Metric::Accuracy, c.iter().sum::<f64>() / 4.0, 0.5));
            pe.entry(format!("{m}-s{seed}")).or_default().insert("a".into(), c.to_vec());
        }
    }
    let c = compare("tram-x", "base", Quantity::InDomain, &s, &pe, Metric::Accuracy).unwrap();
    let v = c.sources.expect("per-example values of every run");
    // Per seed, tram − base = (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 1): d = ¼ each seed, so no variance at all,
    // while each of the last three examples varies (sample variance ⅓, weight ¹⁄₁₆): the per-example part is
    // 3 · ⅓ / 16 and the shared part its negative (the flips cancel).
    assert!((v.mean - 0.25).abs() < 1e-15 && v.total.abs() < 1e-15, "{v:?}");
    assert!((v.per_example - 1.0 / 16.0).abs() < 1e-15 && (v.shared + 1.0 / 16.0).abs() < 1e-15, "{v:?}");
    assert!((c.mean_diff - v.mean).abs() < 1e-15, "the same difference as the summaries'");
    // No per-example values for the zero-shot set: nothing to split.
    let zs = compare("tram-x", "base", Quantity::ZsAvg, &s, &pe, Metric::Accuracy).unwrap();
    assert!(zs.sources.is_none());
    let df = frame(Metric::Accuracy, &[c, zs]).unwrap();
    assert_eq!(df.column("test_set_share").unwrap().f64().unwrap().get(0), Some(1.0));
    assert_eq!(df.column("seeds_for_ci95_1pt").unwrap().u64().unwrap().get(1), None);
}

#[test]
fn accuracy_differences_tie_by_their_counts() {
    // Table 5's in-domain accuracies of ASAM and TRAM-x (k of 334, 8 seeds): Δk = 1, 7, 6, −4, −6, 0, −5, −6.
    let asam = [160, 169, 155, 153, 159, 155, 146, 152];
    let tram = [159, 162, 149, 157, 165, 155, 151, 158];
    let mut s = vec![];
    for seed in 0..8 {
        for (m, k) in [("asam", asam[seed]), ("tram-x", tram[seed])] {
            let mut r = run(m, seed as u64, Metric::Accuracy, f64::from(k) / 334.0, 0.5);
            r.evaluations[0].examples = 334;
            s.push(r);
        }
    }
    let c = compare("asam", "tram-x", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
    // SciPy on the exact differences (one zero, |6| three times): the sign-flip enumeration, 0.953125.
    assert_eq!(c.wilcoxon_p, Some(0.953125));
    let (x, y): (Vec<f64>, Vec<f64>) = (0..8).map(|i| (asam[i] as f64 / 334.0, tram[i] as f64 / 334.0)).unzip();
    assert_eq!(wilcoxon(&x, &y, Alternative::TwoSided).unwrap().pvalue, 0.765625, "k/n − k′/n splits the ties");
    // A value that is no k/n leaves the counts aside: the values themselves are ranked.
    s[0].evaluations[0].value += 1e-3;
    let c = compare("asam", "tram-x", Quantity::InDomain, &s, &PerExample::new(), Metric::Accuracy).unwrap();
    let x0 = s[0].evaluations[0].value;
    let x: Vec<f64> = std::iter::once(x0).chain(x[1..].iter().copied()).collect();
    assert_eq!(c.wilcoxon_p, Some(wilcoxon(&x, &y, Alternative::TwoSided).unwrap().pvalue));
}

#[test]
fn zero_shot_average_ties_over_sets_of_different_sizes() {
    // Two zero-shot sets of 3 and 7 examples: 1 vs 0 correct on the second set is the same ZS-avg difference
    // (1/14) as 5 vs 4 with the sign flipped, which floating point rounds apart: |(0 + 1/7)/2 − 0| ≠
    // |(0 + 4/7)/2 − (0 + 5/7)/2|.
    let counts = [((0, 1), (0, 0)), ((0, 4), (0, 5)), ((1, 0), (0, 0)), ((0, 0), (0, 2)), ((2, 7), (0, 0))];
    let mut s = vec![];
    for (seed, (ka, kb)) in counts.iter().enumerate() {
        for (m, (k1, k2)) in [("base", ka), ("sam", kb)] {
            let mut r = run(m, seed as u64, Metric::Accuracy, 0.5, 0.0);
            let mut second = r.evaluations[1].clone();
            r.evaluations[1].examples = 3;
            r.evaluations[1].value = f64::from(*k1) / 3.0;
            second.set = "c".into();
            second.examples = 7;
            second.value = f64::from(*k2) / 7.0;
            r.evaluations.push(second);
            s.push(r);
        }
    }
    let c = compare("base", "sam", Quantity::ZsAvg, &s, &PerExample::new(), Metric::Accuracy).unwrap();
    // Numerators over 2·lcm(3, 7) = 42: 3, −3, 7, −6, 2·7 + 7·3 = 35; five pairs with a tie: enumeration.
    let want = wilcoxon_differences(&[3.0, -3.0, 7.0, -6.0, 35.0], Alternative::TwoSided, WilcoxonMode::Auto).unwrap();
    assert_eq!((want.method, want.r_plus, want.r_minus), (WilcoxonMethod::Permutation, 10.5, 4.5));
    assert_eq!(c.wilcoxon_p, Some(want.pvalue));
    let (x, y): (Vec<f64>, Vec<f64>) =
        (0..5).map(|i| (s[2 * i].zero_shot_mean(), s[2 * i + 1].zero_shot_mean())).unzip();
    let float = wilcoxon(&x, &y, Alternative::TwoSided).unwrap();
    assert_eq!(float.method, WilcoxonMethod::Exact, "the float differences lose the tie");
    assert_ne!(float.pvalue, want.pvalue);
}

/// One run per method on an in-domain set `a` of 200 blocks and zero-shot sets `b` and `c` of 100 each.
fn block_runs(offset: &dyn Fn(usize) -> f64) -> (Vec<Summary>, PerExample) {
    let mut s = vec![];
    let mut pe = PerExample::new();
    for (m, shift) in [("base", 0.0), ("tram-prev", 1.0)] {
        let mut r = run(m, 0, Metric::Perplexity, 20.0 - shift, 30.0 - shift);
        let mut c = r.evaluations[1].clone();
        c.set = "c".into();
        r.evaluations.push(c);
        s.push(r);
        let by_set = pe.entry(format!("{m}-s0")).or_default();
        // Losses spread over 3.0 .. 5.0 by block; tram-prev's differ from base's by offset(block).
        for (set, n, start) in [("a", 200, 0), ("b", 100, 200), ("c", 100, 300)] {
            let loss = |i: usize| 3.0 + 0.01 * ((i * 37) % 200) as f64 - shift * offset(start + i);
            by_set.insert(set.into(), (0..n).map(loss).collect());
        }
    }
    (s, pe)
}

#[test]
fn one_seed_perplexity_pairs_blocks_beside_ks() {
    // Every block 0.01 lower (a tenth of a percent of perplexity, plus a little per block): KS over the
    // pooled losses cannot tell, the paired test over the same blocks can.
    let (s, pe) = block_runs(&|i| 0.01 + 1e-5 * (i % 7) as f64);
    let c = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!((c.pairs, c.test_name()), (1, "paired Wilcoxon over blocks"));
    let (d, ks_p) = c.ks.unwrap();
    assert!(d <= 0.02 && ks_p > 0.5, "KS sees nothing: D {d}, p {ks_p}");
    let (blocks, p) = c.blocks_wilcoxon.unwrap();
    // All 200 differences negative and distinct up to the 7 offsets' ties: the normal tail, far below 1e-30.
    assert_eq!(blocks, 200);
    assert!(p < 1e-30, "{p}");
    assert_eq!(c.p(), Some(p));
    assert!(c.a_better && c.significant());
    // The zero-shot average pairs the blocks of both sets: 200 of them.
    let zs = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!(zs.blocks_wilcoxon.map(|b| b.0), Some(200));
    let back = compare("base", "tram-prev", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!(back.blocks_wilcoxon.unwrap().1, zs.blocks_wilcoxon.unwrap().1, "symmetric");
    let all = vec![c, zs.clone(), back];
    assert_eq!(
        verdict("tram-prev", Quantity::ZsAvg, &all),
        "better than 1, worse than 0 of 1 (p<0.01, Wilcoxon, 200 blocks)"
    );
    assert_eq!(
        verdict_header(Quantity::ZsAvg, &all),
        "ZS avg vs the other methods (paired Wilcoxon over blocks, p<0.01)"
    );
    let df = frame(Metric::Perplexity, &all).unwrap();
    assert_eq!(df.column("blocks").unwrap().u64().unwrap().get(1), Some(200));
    assert_eq!(df.column("blocks_wilcoxon_p").unwrap().f64().unwrap().get(1), zs.blocks_wilcoxon.map(|b| b.1));
    assert_eq!(df.column("test").unwrap().str().unwrap().get(1), Some("paired Wilcoxon over blocks"));
    assert!(df.column("ks_p").unwrap().f64().unwrap().get(1).unwrap() > 0.5, "KS columns kept");
}

#[test]
fn blocks_pair_by_identity_and_need_every_set() {
    // tram-prev's losses are base's in reverse block order: the same sample (KS D = 0), and the paired
    // differences are antisymmetric about the middle block, so the signed ranks balance exactly.
    let (mut s, mut pe) = block_runs(&|_| 0.0);
    let base_a = pe["base-s0"]["a"].clone();
    pe.get_mut("tram-prev-s0").unwrap().insert("a".into(), base_a.iter().rev().copied().collect());
    let c = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!(c.ks.unwrap().0, 0.0);
    assert_eq!(c.blocks_wilcoxon.unwrap().1, 1.0);
    // Identical losses: every difference zero, no evidence either way.
    let zs = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!(zs.blocks_wilcoxon, Some((200, 1.0)));
    // A zero-shot set without per-block values, or of another size, leaves the test out.
    pe.get_mut("base-s0").unwrap().get_mut("c").unwrap().pop();
    assert_eq!(
        compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap().blocks_wilcoxon,
        None
    );
    pe.get_mut("base-s0").unwrap().remove("c");
    let none = compare("tram-prev", "base", Quantity::ZsAvg, &s, &pe, Metric::Perplexity).unwrap();
    assert_eq!((none.blocks_wilcoxon, none.p()), (None, None));
    // Two seeds: each block's difference is averaged over the seeds before ranking.
    let (s1, pe1) = block_runs(&|i| if i < 100 { 0.02 } else { -0.01 });
    for r in s1 {
        s.push(Summary { run_id: r.run_id.replace("-s0", "-s1"), seed: 1, ..r });
    }
    for (run, sets) in pe1 {
        pe.insert(run.replace("-s0", "-s1"), sets);
    }
    let two = compare("tram-prev", "base", Quantity::InDomain, &s, &pe, Metric::Perplexity).unwrap();
    let d: Vec<f64> = (0..200)
        .map(|i| ((base_a[199 - i] - base_a[i]) + (pe["tram-prev-s1"]["a"][i] - pe["base-s1"]["a"][i])) / 2.0)
        .collect();
    let want = wilcoxon_differences(&d, Alternative::TwoSided, WilcoxonMode::Auto).unwrap().pvalue;
    assert_eq!((two.pairs, two.blocks_wilcoxon), (2, Some((200, want))));
    assert_eq!(two.test_name(), "paired Wilcoxon over seeds");
}
