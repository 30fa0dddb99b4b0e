//! Hugging Face image data sets as the Hub stores them: parquet files with an image column (a struct
//! `{bytes, path}`, or plain binary) and an integer label column, e.g. CIFAR-100 (`img`, `fine_label`), Stanford
//! Cars and Oxford Flowers (`image`, `label`). Class names come from the `huggingface` key of the file metadata
//! (`info.features.<label>.names`) when present.
//!
//! The encoded image bytes (PNG/JPEG, as stored) are read into memory once; decoding happens per batch in the
//! loader's workers, so a split takes about as much memory as its parquet files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use super::{Dataset, Rgb, Source};
use crate::error::{io_err, Error, Result};

/// Encoded images in memory, with labels.
#[derive(Debug)]
pub struct EncodedImages {
    /// `(file, row)` of each image, for error messages.
    origin: Vec<(Arc<PathBuf>, usize)>,
    bytes: Vec<Vec<u8>>,
    labels: Vec<i64>,
}

impl Source for EncodedImages {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn label(&self, i: usize) -> i64 {
        self.labels[i]
    }
    fn location(&self, i: usize) -> String {
        format!("{} row {}", self.origin[i].0.display(), self.origin[i].1)
    }
    fn load(&self, i: usize) -> std::result::Result<Rgb, String> {
        super::decode(&self.bytes[i])
    }
}

/// Column names of a Hugging Face image data set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetColumns {
    pub image: String,
    pub label: String,
}

impl Default for ParquetColumns {
    fn default() -> Self {
        Self { image: "image".into(), label: "label".into() }
    }
}

/// Reads `files` (one split, possibly sharded) into a data set. With `classes` given (the training split's),
/// every label must index it; otherwise class names come from the metadata of the first file, or are "0".."N-1".
pub fn open(
    name: &str,
    files: &[PathBuf],
    columns: &ParquetColumns,
    classes: Option<Arc<Vec<String>>>,
) -> Result<Dataset> {
    if files.is_empty() {
        return Err(Error::Config(format!("parquet data set `{name}`: no files given")));
    }
    let mut images = EncodedImages { origin: vec![], bytes: vec![], labels: vec![] };
    let mut meta_classes = None;
    for path in files {
        let err = |message: String| Error::Data { path: path.clone(), message };
        let file = File::open(path).map_err(io_err(path))?;
        let reader = SerializedFileReader::new(file).map_err(|e| err(e.to_string()))?;
        if meta_classes.is_none() {
            meta_classes = class_names(&reader, &columns.label);
        }
        let shared = Arc::new(path.clone());
        let rows = reader.get_row_iter(None).map_err(|e| err(e.to_string()))?;
        for (r, row) in rows.enumerate() {
            let row = row.map_err(|e| err(format!("row {r}: {e}")))?;
            let (mut bytes, mut label) = (None, None);
            for (col, field) in row.get_column_iter() {
                if *col == columns.image {
                    bytes = Some(
                        image_bytes(field)
                            .ok_or_else(|| err(format!("row {r}: column `{col}` holds no image bytes ({field})")))?,
                    );
                } else if *col == columns.label {
                    label =
                        Some(tram_task::kit::parquet::integer(field).ok_or_else(|| {
                            err(format!("row {r}: column `{col}` is not an integer label ({field})"))
                        })?);
                }
            }
            let missing = |c: &str| {
                err(format!(
                    "no column `{c}` (columns: {})",
                    row.get_column_iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ))
            };
            images.bytes.push(bytes.ok_or_else(|| missing(&columns.image))?);
            images.labels.push(label.ok_or_else(|| missing(&columns.label))?);
            images.origin.push((shared.clone(), r));
        }
    }
    let max = images.labels.iter().copied().max().unwrap_or(-1);
    if let Some(&bad) = images.labels.iter().find(|&&l| l < 0) {
        return Err(Error::Data { path: files[0].clone(), message: format!("negative label {bad}") });
    }
    let classes = match classes.or(meta_classes.map(Arc::new)) {
        Some(c) => c,
        None => Arc::new((0..=max).map(|i| i.to_string()).collect()),
    };
    if max >= classes.len() as i64 {
        return Err(Error::Data {
            path: files[0].clone(),
            message: format!("label {max} but only {} classes", classes.len()),
        });
    }
    Ok(Dataset::all(name, Arc::new(images), classes))
}

/// The `names` of the label feature in the file's `huggingface` metadata.
fn class_names(reader: &SerializedFileReader<File>, label: &str) -> Option<Vec<String>> {
    let kv = reader.metadata().file_metadata().key_value_metadata()?;
    let json = kv.iter().find(|k| k.key == "huggingface")?.value.as_ref()?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let names = v.get("info")?.get("features")?.get(label)?.get("names")?.as_array()?;
    names.iter().map(|n| n.as_str().map(str::to_string)).collect()
}

fn image_bytes(field: &Field) -> Option<Vec<u8>> {
    match field {
        Field::Bytes(b) => Some(b.data().to_vec()),
        Field::Group(row) => row.get_column_iter().find(|(n, _)| n.as_str() == "bytes").and_then(|(_, f)| match f {
            Field::Bytes(b) => Some(b.data().to_vec()),
            _ => None,
        }),
        _ => None,
    }
}

/// The parquet files of a split in a Hub snapshot folder: `dir/<split>-*.parquet` or `dir/<split>/*.parquet`
/// (the two layouts the Hub uses), sorted.
pub fn split_files(dir: &Path, split: &str) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    let mut scan = |d: &Path, prefix: Option<&str>| -> Result<()> {
        if !d.is_dir() {
            return Ok(());
        }
        for e in std::fs::read_dir(d).map_err(io_err(d))?.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && prefix.is_none_or(|pre| name.starts_with(pre)) {
                files.push(p);
            }
        }
        Ok(())
    };
    scan(dir, Some(&format!("{split}-")))?;
    scan(&dir.join(split), None)?;
    scan(&dir.join("data"), Some(&format!("{split}-")))?;
    files.sort();
    if files.is_empty() {
        return Err(Error::Data {
            path: dir.to_path_buf(),
            message: format!(
                "no parquet files for split `{split}` ({split}-*.parquet, {split}/*.parquet or data/{split}-*.parquet)"
            ),
        });
    }
    Ok(files)
}

/// A Hub data set folder as the paper uses it (Table 3): fine-tune on `train`, top-1 on `test` (its default
/// partitions), no out-of-domain sets. Labels of the test split index the training split's classes.
pub fn transfer_data(dir: &Path, columns: &ParquetColumns, train: &str, test: &str) -> Result<super::TransferData> {
    let name = dir.file_name().map_or_else(|| "parquet".to_string(), |n| n.to_string_lossy().into_owned());
    let train = open(&format!("{name}/{train}"), &split_files(dir, train)?, columns, None)?;
    let test = open(&format!("{name}/{test}"), &split_files(dir, test)?, columns, Some(train.classes.clone()))?;
    Ok(super::TransferData { classes: train.classes.clone(), train, test, ood: vec![] })
}
