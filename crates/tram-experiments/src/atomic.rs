//! Durable, atomic file writes: write beside the target, fsync, rename, fsync the folder, so that a reader (or a
//! run killed at any moment) sees either the old file or the new one, never a part of one; the temporary file is
//! removed on any error.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;

fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Flushes a folder's entries (a rename inside it) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// Writes what `fill` produces into a temporary file beside `path`, then moves it into place durably.
pub fn write_with(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating the folder {}", parent.display()))?;
    let tmp = tmp_path(path);
    let done = fill(&tmp)
        .and_then(|()| {
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        })
        .and_then(|()| sync_dir(parent));
    if done.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    done
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        let mut f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))
    })
}

pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_bytes(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// `x` rounded to 10 significant digits: what a CSV keeps of a float (no `279.39985850000005`), far finer than
/// anything a table or a tolerance reads.
pub fn round_sig(x: f64) -> f64 {
    if x.is_finite() && x != 0.0 {
        format!("{x:.9e}").parse().unwrap_or(x)
    } else {
        x
    }
}

/// Writes a data frame as CSV (header, comma-separated, floats rounded by [`round_sig`]).
pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    let mut rounded = df.clone();
    for name in df.get_column_names_owned() {
        let col = df.column(&name)?;
        if col.dtype() == &DataType::Float64 {
            let v: Vec<Option<f64>> = col.f64()?.into_iter().map(|x| x.map(round_sig)).collect();
            rounded.with_column(Column::new(name, v))?;
        }
    }
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).include_header(true).with_separator(b',').finish(&mut rounded)?;
    write_bytes(path, &buf)
}

pub fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .with_context(|| format!("opening {}", path.display()))?
        .finish()
        .with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_at_ten_significant_digits() {
        assert_eq!(round_sig(279.39985850000005), 279.3998585);
        assert_eq!(round_sig(0.6596858638743456), 0.6596858639);
        assert_eq!(round_sig(13530148.0), 13530148.0);
        assert!(round_sig(f64::NAN).is_nan());
    }

    #[test]
    fn a_failed_write_leaves_neither_debris_nor_a_partial_file() {
        let dir = std::env::temp_dir().join(format!("tram-atomic-{}", std::process::id()));
        let path = dir.join("out.txt");
        write_bytes(&path, b"old").unwrap();
        let err = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("disk full")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["out.txt"], "no temporary file left behind");
        std::fs::remove_dir_all(&dir).ok();
    }
}
