//! The long CSV (`results/<experiment>-<profile>-long.csv`): one row per (run, set, metric), written for every
//! sweep and analysis, read by `tram compare`, `tram check` and `tram expectations`. Its writer and its reader
//! share [`Row`].

use std::path::Path;

use anyhow::{bail, Context, Result};
use polars::prelude::*;

use crate::atomic::read_csv;
use crate::summary::Summary;

/// One row of a long CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub experiment: String,
    pub profile: String,
    pub run_id: String,
    pub method: String,
    pub seed: u64,
    /// The evaluation set (`zs-avg` for the zero-shot average); empty for a run-level number.
    pub set: String,
    /// `in-domain` or `zero-shot`; empty for a run-level number.
    pub domain: String,
    pub metric: String,
    pub value: f64,
}

/// The columns, in order.
pub const COLUMNS: [&str; 9] =
    ["experiment", "profile", "run_id", "method", "seed", "set", "domain", "metric", "value"];

/// The rows of one run's numbers, each pushed with its set, domain, metric and value.
pub struct RunRows<'a> {
    pub experiment: &'a str,
    pub profile: &'a str,
    pub run_id: &'a str,
    pub method: &'a str,
    pub seed: u64,
    pub rows: &'a mut Vec<Row>,
}

impl RunRows<'_> {
    /// A row, unless `value` is not finite: the CSV holds numbers only (a diverged run says so in its own row).
    pub fn push(&mut self, set: &str, domain: &str, metric: impl Into<String>, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.rows.push(Row {
            experiment: self.experiment.to_string(),
            profile: self.profile.to_string(),
            run_id: self.run_id.to_string(),
            method: self.method.to_string(),
            seed: self.seed,
            set: set.to_string(),
            domain: domain.to_string(),
            metric: metric.into(),
            value,
        });
    }
}

/// The rows of finished runs: each evaluation's value, loss and examples, then the run-level numbers (empty set),
/// including the first steps' losses and norms (the regression check's fingerprint); a diverged run has no
/// evaluation but a `diverged_after_steps` row.
pub fn summary_rows(experiment: &str, profile: &str, summaries: &[Summary]) -> Vec<Row> {
    let mut rows = vec![];
    for s in summaries {
        let mut run =
            RunRows { experiment, profile, run_id: &s.run_id, method: &s.method_id, seed: s.seed, rows: &mut rows };
        if let Some(d) = &s.diverged {
            run.push("", "", "diverged_after_steps", d.steps as f64);
        }
        for e in &s.evaluations {
            run.push(&e.key(), e.domain.as_str(), e.metric.as_str(), e.value);
            run.push(&e.key(), e.domain.as_str(), "eval_loss", e.loss);
            run.push(&e.key(), e.domain.as_str(), "examples", e.examples as f64);
        }
        if s.zero_shot().next().is_some() {
            run.push("zs-avg", "zero-shot", s.metric.as_str(), s.zero_shot_mean());
        }
        run.push("", "", "train_loss", s.final_train_loss);
        run.push("", "", "last_step_loss", s.last_step_loss);
        for r in &s.early_steps {
            let k = r.step;
            run.push("", "", format!("step{k}_lr"), r.lr);
            run.push("", "", format!("step{k}_loss"), r.loss);
            run.push("", "", format!("step{k}_grad_norm"), r.grad_norm);
            run.push("", "", format!("step{k}_descent_grad_norm"), r.descent_grad_norm);
            for (name, v) in
                [("perturbed_loss", r.perturbed_loss), ("divergence", r.divergence), ("eps_norm", r.eps_norm)]
            {
                if let Some(v) = v {
                    run.push("", "", format!("step{k}_{name}"), v);
                }
            }
        }
        run.push("", "", "forward_passes_per_step", s.forward_passes_per_step);
        run.push("", "", "backward_passes_per_step", s.backward_passes_per_step);
        run.push("", "", "extra_memory_bytes", s.extra_memory_bytes as f64);
        if let Some(sigma) = s.noise_sigma {
            run.push("", "", "noise_sigma", sigma);
        }
        run.push("", "", "skipped_steps", s.skipped_steps as f64);
        run.push("", "", "train_seconds", s.train_seconds);
    }
    rows
}

/// The long CSV's frame.
pub fn frame(rows: &[Row]) -> Result<DataFrame> {
    let col = |f: &dyn Fn(&Row) -> &str| rows.iter().map(|r| f(r).to_string()).collect::<Vec<String>>();
    Ok(DataFrame::new(vec![
        Column::new("experiment".into(), col(&|r| &r.experiment)),
        Column::new("profile".into(), col(&|r| &r.profile)),
        Column::new("run_id".into(), col(&|r| &r.run_id)),
        Column::new("method".into(), col(&|r| &r.method)),
        Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<u64>>()),
        Column::new("set".into(), col(&|r| &r.set)),
        Column::new("domain".into(), col(&|r| &r.domain)),
        Column::new("metric".into(), col(&|r| &r.metric)),
        Column::new("value".into(), rows.iter().map(|r| r.value).collect::<Vec<f64>>()),
    ])?)
}

/// The rows of a long CSV; an error names the file and what is wrong (a missing column, a short row, a value
/// that is not a finite number, two rows of the same run, set and metric).
pub fn read(path: &Path) -> Result<Vec<Row>> {
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
        if !value.is_finite() {
            bail!("{} line {line}: value `{value_text}` is not a finite number", path.display());
        }
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
    refuse_duplicates(&out, &|i| format!("{} line {}", path.display(), i + 2))?;
    Ok(out)
}

/// The key a long CSV has one row of.
fn key(r: &Row) -> (&str, &str, &str, &str, &str) {
    (&r.experiment, &r.profile, &r.run_id, &r.set, &r.metric)
}

/// An error naming two rows (by `place`) of the same experiment, profile, run, set and metric: a duplicated row
/// would count twice in a mean and halve an interval, a conflicting one would silently win.
pub fn refuse_duplicates(rows: &[Row], place: &dyn Fn(usize) -> String) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(first) = seen.insert(key(r), i) {
            bail!(
                "{} and {} are both run {}, set `{}`, metric {} (of {} {}): a long CSV has one row per run, set and \
                 metric; remove the copy",
                place(first),
                place(i),
                r.run_id,
                r.set,
                r.metric,
                r.experiment,
                r.profile
            );
        }
    }
    Ok(())
}

/// The rows of several long CSVs, refused like one file's when two share a run, set and metric.
pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Row>> {
    let mut rows = vec![];
    let mut places = vec![];
    for p in paths {
        let these = read(p)?;
        places.extend((0..these.len()).map(|i| format!("{} line {}", p.display(), i + 2)));
        rows.extend(these);
    }
    refuse_duplicates(&rows, &|i| places[i].clone())?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tram_task::{Domain, Metric};

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tram-long-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn summaries_have_sets_domains_and_the_fingerprint() {
        let evals = vec![
            Summary::eval("news", Domain::InDomain, Metric::Accuracy, 0.7),
            Summary::eval("fiction", Domain::ZeroShot, Metric::Accuracy, 0.6),
            Summary::eval("humor", Domain::ZeroShot, Metric::Accuracy, 0.5),
        ];
        let rows = summary_rows("t", "quick", &[Summary::fixture("sam", 0, Metric::Accuracy, evals)]);
        let metric = |m: &str, set: &str| rows.iter().find(|r| r.metric == m && r.set == set).map(|r| r.value);
        assert_eq!(metric("accuracy", "fiction"), Some(0.6));
        assert_eq!(metric("accuracy", "zs-avg"), Some(0.55));
        assert_eq!(metric("step0_eps_norm", ""), Some(0.05));
        assert_eq!(metric("step0_divergence", ""), None, "absent values are not rows");
        // What the writer writes, the reader reads.
        let path = write("round-trip.csv", "");
        crate::atomic::write_csv(&path, &mut frame(&rows).unwrap()).unwrap();
        assert_eq!(read(&path).unwrap(), rows);
    }

    #[test]
    fn bad_csvs_are_named_not_read_as_nan() {
        let wide = write("wide.csv", "method,seeds,google (in-domain)\nSGD,3,68.50±5.61\n");
        assert!(read(&wide).unwrap_err().to_string().contains("no column `experiment`"));
        let head = COLUMNS.join(",");
        let text = write("text.csv", &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,accuracy,high\n"));
        let err = format!("{:#}", read(&text).unwrap_err());
        assert!(err.contains("line 2") && err.contains("`high` is not a number"), "{err}");
        for bad in ["NaN", "inf", "-inf"] {
            let f = write("nan.csv", &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,accuracy,{bad}\n"));
            let err = format!("{:#}", read(&f).unwrap_err());
            assert!(err.contains("line 2") && err.contains(&format!("`{bad}` is not a finite number")), "{err}");
        }
    }

    #[test]
    fn a_duplicated_or_conflicting_row_is_refused_naming_both_lines() {
        let head = COLUMNS.join(",");
        let row = |v: f64| format!("t,q,sam-s0,sam,0,g,in-domain,accuracy,{v}\n");
        let other = "t,q,sam-s1,sam,1,g,in-domain,accuracy,0.5\n";
        for (name, second) in [("copy.csv", row(0.5)), ("conflict.csv", row(0.9))] {
            let f = write(name, &format!("{head}\n{}{other}{second}", row(0.5)));
            let err = format!("{:#}", read(&f).unwrap_err());
            assert!(err.contains("line 2 and") && err.contains("line 4 are both run sam-s0"), "{err}");
        }
        // The same file twice is a copy of every row.
        let f = write("once.csv", &format!("{head}\n{}", row(0.5)));
        assert_eq!(read_all(std::slice::from_ref(&f)).unwrap().len(), 1);
        let err = format!("{:#}", read_all(&[f.clone(), f]).unwrap_err());
        assert!(err.contains("once.csv line 2 and") && err.contains("both run sam-s0"), "{err}");
    }
}
