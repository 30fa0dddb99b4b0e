//! The runner's files, each written durably and atomically by [`tram_task::kit::atomic`] (a reader, or a run
//! killed at any moment, sees the old file or the new one, never a part of one), and the clock its records use.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use polars::prelude::*;

pub use tram_task::kit::atomic::{is_debris, write_with};

/// Seconds since the Unix epoch (what locks, attempts and `meta.json` record).
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(tram_task::kit::atomic::write_bytes(path, bytes)?)
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
}
