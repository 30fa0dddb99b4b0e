//! The paper's side of every table: the label the paper prints for a method, and its own numbers
//! (`results/paper/<table>.csv`, rows keyed by that label) to show beside ours.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use polars::prelude::*;
use tram_core::{BaseConfig, MethodConfig, MethodName};

use crate::atomic;
use crate::experiment::{method_id, Experiment};

/// The label the paper prints for a method (the base optimizer by its name), with any hyperparameter the entry
/// sets: `SAM`, `SAM (rho=0.1)`.
pub fn label(method: &MethodConfig, base: &BaseConfig) -> String {
    let name = match method.name {
        MethodName::Base => match base {
            BaseConfig::Sgd { .. } => "SGD",
            BaseConfig::Adam { .. } => "Adam",
            BaseConfig::AdamW { .. } => "AdamW",
        },
        n => n.paper_label(),
    };
    let id = method_id(method);
    let rest = id.strip_prefix(method.name.as_str()).unwrap_or("").trim_start_matches('-');
    if rest.is_empty() {
        name.to_string()
    } else {
        let keys = toml::Value::try_from(method).ok();
        let params: Vec<String> = keys
            .as_ref()
            .and_then(|v| v.as_table())
            .map(|t| t.iter().filter(|(k, _)| k.as_str() != "name").map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        format!("{name} ({})", params.join(", ").replace('"', ""))
    }
}

/// A paper table's rows keyed by their first column, with its column names.
pub struct PaperTable {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: BTreeMap<String, Vec<String>>,
}

impl PaperTable {
    pub fn read(path: &Path) -> Result<PaperTable> {
        let df = atomic::read_csv(path)?;
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        let cell = |n: &str, i: usize| match df.column(n).ok().and_then(|c| c.get(i).ok()) {
            Some(AnyValue::String(s)) => s.to_string(),
            Some(AnyValue::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let rows =
            (0..df.height()).map(|i| (cell(&names[0], i), names[1..].iter().map(|n| cell(n, i)).collect())).collect();
        let name = path.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        Ok(PaperTable { name, columns: names[1..].to_vec(), rows })
    }

    /// The paper's row of the pre-trained model without fine-tuning (Table 4's `GPT-2`): the row whose label
    /// names no method.
    pub fn pretrained_row(&self) -> Option<&Vec<String>> {
        let is_method = |lab: &str| {
            ["SGD", "Adam", "AdamW"].contains(&lab) || MethodName::ALL.iter().any(|m| m.paper_label() == lab)
        };
        self.rows.iter().find(|(k, _)| !is_method(k)).map(|(_, r)| r)
    }

    /// `paper <table>: <column>` for each of its columns: the headers of the paper's cells beside ours.
    pub fn headers(&self) -> impl Iterator<Item = String> + '_ {
        self.columns.iter().map(|c| format!("paper {}: {c}", self.name))
    }
}

/// The paper tables named by the experiment, from `paper_dir`; a missing one is a warning, not an error.
pub fn tables(exp: &Experiment, paper_dir: &Path) -> Vec<PaperTable> {
    exp.file
        .paper
        .iter()
        .filter_map(|f| match PaperTable::read(&paper_dir.join(f)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("the paper's table {f} is not shown beside ours: {e:#}");
                None
            }
        })
        .collect()
}

/// The paper's cells of the row labelled `lab` in each of `paper`'s tables (empty where a table has no such row).
pub fn cells(paper: &[PaperTable], lab: &str) -> Vec<String> {
    paper
        .iter()
        .flat_map(|p| p.rows.get(lab).cloned().unwrap_or_else(|| vec![String::new(); p.columns.len()]))
        .collect()
}

/// Our columns of a table laid out with the paper's beside (those not headed `paper …`), for the terminal.
pub fn without_paper(table: &DataFrame) -> Result<DataFrame> {
    let ours: Vec<&str> =
        table.get_column_names().into_iter().map(|c| c.as_str()).filter(|c| !c.starts_with("paper ")).collect();
    Ok(table.select(ours)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_base_and_any_hyperparameter() {
        let m: Vec<MethodConfig> =
            ["base", "sam"].iter().map(|n| toml::from_str(&format!("name = \"{n}\"")).unwrap()).collect();
        assert_eq!(label(&m[0], &BaseConfig::sgd()), "SGD");
        let rho: MethodConfig = toml::from_str("name = \"sam\"\nrho = 0.1").unwrap();
        assert_eq!(label(&rho, &BaseConfig::sgd()), "SAM (rho=0.1)");
    }
}
