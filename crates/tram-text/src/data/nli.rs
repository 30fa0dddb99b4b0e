//! MultiNLI and XNLI as Hugging Face data set folders store them (parquet), the paper's Table 5 data (arXiv
//! 2310.03646 v2 §4.3, App. A Table 8): train on English MultiNLI, select on English XNLI validation, test on the
//! XNLI test sets of 15 languages. Premise/hypothesis pairs, labels 0 entailment, 1 neutral, 2 contradiction.
//!
//! Layouts accepted:
//! - `nyu-mll/multi_nli`: `data/<split>-00000-of-00001.parquet` (also `<split>-*.parquet`, `<split>/*.parquet`);
//! - `facebook/xnli`: `<lang>/<split>-00000-of-00001.parquet`, or the older converter's `<lang>/xnli-<split>.parquet`
//!   (also `<lang>/<split>/*.parquet`).
//!
//! Rows labelled −1 (pairs without a gold label, in some copies of MultiNLI) are dropped and counted.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::error::{io_err, Error, Result};

/// The 15 XNLI languages, in the paper's order of Table 5 after English.
pub const XNLI_LANGUAGES: [&str; 15] =
    ["en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"];

/// The three NLI classes.
pub const NLI_CLASSES: [&str; 3] = ["entailment", "neutral", "contradiction"];

/// One premise/hypothesis pair.
#[derive(Debug, Clone, PartialEq)]
pub struct NliExample {
    pub premise: String,
    pub hypothesis: String,
    pub label: i64,
}

/// The rows of one split, and how many unlabelled rows (−1) were dropped.
#[derive(Debug, Clone, Default)]
pub struct NliSplit {
    pub examples: Vec<NliExample>,
    pub dropped_unlabelled: usize,
    pub files: Vec<PathBuf>,
}

/// Reads `premise`, `hypothesis` and `label` from parquet `files` (one split).
pub fn read(files: &[PathBuf]) -> Result<NliSplit> {
    let mut out = NliSplit { files: files.to_vec(), ..Default::default() };
    for path in files {
        let err = |message: String| Error::Data { path: path.clone(), message };
        let file = File::open(path).map_err(io_err(path))?;
        let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
        let rows = reader.get_row_iter(None).map_err(|e| err(e.to_string()))?;
        for (r, row) in rows.enumerate() {
            let row = row.map_err(|e| err(format!("row {r}: {e}")))?;
            let (mut premise, mut hypothesis, mut label) = (None, None, None);
            for (col, field) in row.get_column_iter() {
                match (col.as_str(), field) {
                    ("premise", Field::Str(s)) => premise = Some(s.clone()),
                    ("hypothesis", Field::Str(s)) => hypothesis = Some(s.clone()),
                    ("label", f) => {
                        label = Some(
                            tram_task::kit::parquet::integer(f)
                                .ok_or_else(|| err(format!("row {r}: column `label` is not an integer ({f})")))?,
                        )
                    }
                    _ => {}
                }
            }
            let missing = |c: &str| {
                err(format!(
                    "row {r}: no string column `{c}` (columns: {})",
                    row.get_column_iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ))
            };
            let premise = premise.ok_or_else(|| missing("premise"))?;
            let hypothesis = hypothesis.ok_or_else(|| missing("hypothesis"))?;
            let label = label.ok_or_else(|| missing("label"))?;
            match label {
                -1 => out.dropped_unlabelled += 1,
                0..=2 => out.examples.push(NliExample { premise, hypothesis, label }),
                l => return Err(err(format!("row {r}: label {l} is not one of -1, 0, 1, 2"))),
            }
        }
    }
    Ok(out)
}

/// Parquet files in `dir` whose name starts with `prefix` (sorted), and those of `dir/<subdir>/`.
fn parquet_files(dir: &Path, prefixes: &[String], subdir: &str) -> Vec<PathBuf> {
    let mut files = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                files.push(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join(subdir)) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".parquet") {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// The parquet files of MultiNLI split `split` (`train`, `validation_matched`, ...) in a snapshot folder.
pub fn multinli_files(dir: &Path, split: &str) -> Result<Vec<PathBuf>> {
    let prefixes = [format!("{split}-"), format!("{split}.")];
    let mut files = parquet_files(&dir.join("data"), &prefixes, split);
    if files.is_empty() {
        files = parquet_files(dir, &prefixes, split);
    }
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            message: format!(
                "no MultiNLI `{split}` parquet files (expected data/{split}-00000-of-00001.parquet, as in the \
                 Hub's nyu-mll/multi_nli)"
            ),
        });
    }
    Ok(files)
}

/// The parquet files of XNLI language `lang`, split `split` (`validation`, `test`) in a snapshot folder.
pub fn xnli_files(dir: &Path, lang: &str, split: &str) -> Result<Vec<PathBuf>> {
    let prefixes = [format!("{split}-"), format!("xnli-{split}.")];
    let files = parquet_files(&dir.join(lang), &prefixes, split);
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.join(lang),
            message: format!(
                "no XNLI `{lang}` `{split}` parquet files (expected {lang}/{split}-00000-of-00001.parquet or \
                 {lang}/xnli-{split}.parquet, as in the Hub's facebook/xnli)"
            ),
        });
    }
    Ok(files)
}
