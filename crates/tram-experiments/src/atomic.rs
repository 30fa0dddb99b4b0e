//! Atomic file writes: write beside the target, then rename, so a reader (or an interrupted run) never sees a
//! half-written file.

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_bytes(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Writes a data frame as CSV (header, comma-separated, floats as computed).
pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).include_header(true).with_separator(b',').finish(df)?;
    write_bytes(path, &buf)
}

pub fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
        .with_context(|| format!("reading {}", path.display()))
}
