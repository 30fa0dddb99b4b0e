//! Where the embedded assets live: `${TRAM_CACHE:-$HOME/.cache/tram}/assets`, filled by `bash tools/assets.sh`,
//! and the check of what a task will load against the checksums the script wrote when it fetched it.

use std::path::{Path, PathBuf};

pub use crate::error::ASSETS_COMMAND;
use crate::error::{Error, Result};

/// The cache folder (`TRAM_CACHE`, else `~/.cache/tram`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TRAM_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/tram"),
    }
}

/// The cache folder's `assets` directory.
pub fn assets_dir() -> PathBuf {
    cache_dir().join("assets")
}

/// `path` if it exists, else an error naming the command that fetches it.
pub fn require(what: &str, path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::MissingAsset { what: what.to_string(), path: path.to_path_buf() })
    }
}

/// The checksum manifest `tools/assets.sh` writes in every asset folder once it has checked the package the folder
/// came from: `sha256sum` lines (`<hex>  <path>`, paths relative to the folder), so `cd <folder> && sha256sum -c
/// SHA256SUMS` checks it by hand.
pub const MANIFEST: &str = "SHA256SUMS";

/// The manifest of the asset folder `dir`: relative path → sha256 (hex), in the file's order.
pub fn manifest(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::CorruptAsset {
                path: path.clone(),
                message: "there is no checksum manifest (older copies of tools/assets.sh wrote none)".into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let mut entries = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .filter(|(h, f)| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) && !f.is_empty());
        let Some((hash, file)) = parsed else {
            return Err(Error::CorruptAsset {
                path: path.clone(),
                message: format!("line {} is not `<sha256>  <file>`: {line:?}", i + 1),
            });
        };
        entries.push((file.to_string(), hash.to_ascii_lowercase()));
    }
    Ok(entries)
}

pub use crate::kit::checksum::sha256_file;

/// Checks files of the asset folder `dir` against its manifest: those named in `files` (paths relative to
/// `dir`), else every file the manifest lists. Each file is read whole, so a file that changed since it was
/// fetched (a zero-filled block, a truncated copy, an edit) is an error naming it, before any run loads it.
/// Returns the bytes checked.
pub fn verify(dir: &Path, files: Option<&[&str]>) -> Result<u64> {
    let entries = manifest(dir)?;
    let wanted: Vec<(&str, &str)> = match files {
        None => entries.iter().map(|(f, h)| (f.as_str(), h.as_str())).collect(),
        Some(files) => files
            .iter()
            .map(|f| match entries.iter().find(|(e, _)| e == f) {
                Some((_, h)) => Ok((*f, h.as_str())),
                None => Err(Error::CorruptAsset { path: dir.join(MANIFEST), message: format!("`{f}` is not listed") }),
            })
            .collect::<Result<_>>()?,
    };
    let mut bytes = 0;
    for (file, expected) in wanted {
        let path = dir.join(file);
        if !path.exists() {
            return Err(Error::CorruptAsset { path, message: "listed in the checksum manifest but missing".into() });
        }
        let got = sha256_file(&path)?;
        if got != expected {
            return Err(Error::CorruptAsset {
                path,
                message: format!("sha256 {got}, but {expected} when it was fetched: the file changed"),
            });
        }
        bytes += std::fs::metadata(&path)?.len();
    }
    Ok(bytes)
}

/// Checks the files a run will read from the folder `dir` against its checksum manifest ([`verify`]): `files`
/// (relative to `dir`), or every file listed. The cache's folders (`cached`) always have a manifest
/// (`tools/assets.sh` writes one), so a missing one is an error there; a folder of one's own downloads is checked
/// when it has one.
pub fn verify_folder(dir: &Path, files: Option<&[&str]>, cached: bool) -> Result<()> {
    if cached || dir.join(MANIFEST).exists() {
        verify(dir, files)?;
    }
    Ok(())
}

/// [`verify_folder`] for one file: its folder's manifest entry for it.
pub fn verify_file(path: &Path, cached: bool) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    verify_folder(dir, Some(&[name]), cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_block_a_missing_file_or_no_manifest_is_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("tram-assets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("img")).unwrap();
        let weights: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(dir.join("w.safetensors"), &weights).unwrap();
        std::fs::write(dir.join("img/a.png"), b"png").unwrap();
        assert!(verify(&dir, None).unwrap_err().to_string().contains("no checksum manifest"));
        // `printf png | sha256sum`
        let png = "8f8cbb7dcf46e0bc7d53265749a6c17d116093a6ba95e442764060c76fd4a86c";
        assert_eq!(sha256_file(&dir.join("img/a.png")).unwrap(), png);
        let manifest =
            format!("{}  w.safetensors\n{png}  img/a.png\n", sha256_file(&dir.join("w.safetensors")).unwrap());
        std::fs::write(dir.join(MANIFEST), &manifest).unwrap();
        assert_eq!(verify(&dir, None).unwrap(), 100_003);
        assert_eq!(verify(&dir, Some(&["img/a.png"])).unwrap(), 3);
        // Same size, a block of zeros: what loads silently without the check.
        let mut damaged = weights.clone();
        damaged[4096..8192].fill(0);
        std::fs::write(dir.join("w.safetensors"), &damaged).unwrap();
        let err = verify(&dir, None).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("the file changed") && err.contains(ASSETS_COMMAND),
            "{err}"
        );
        assert!(verify(&dir, Some(&["img/a.png"])).is_ok(), "only what is asked for is read");
        assert!(verify(&dir, Some(&["b.png"])).unwrap_err().to_string().contains("`b.png` is not listed"));
        std::fs::remove_file(dir.join("img/a.png")).unwrap();
        assert!(verify(&dir, Some(&["img/a.png"])).unwrap_err().to_string().contains("missing"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
