//! Checksums written with what a run writes (saved weights, checkpoints) and checked before it is read back: a
//! file changed since (a zeroed block, a truncated copy) is an error naming it, not a model silently loaded. The
//! format is `sha256sum`'s (`<hex>  <name>`), so `sha256sum -c` checks it by hand.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The checksum file beside `path`: `<path>.sha256`.
pub fn sidecar(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{name}.sha256"))
}

/// Writes `<dir>/<list>`: the sha256 of each of `files` (names in `dir`), atomically.
pub fn write_list(dir: &Path, list: &str, files: &[&str]) -> Result<()> {
    let mut text = String::new();
    for f in files {
        text += &format!("{}  {f}\n", sha256_file(&dir.join(f))?);
    }
    Ok(crate::kit::atomic::write_bytes(&dir.join(list), text.as_bytes())?)
}

/// Writes `<path>.sha256` for the file `path` (after the file itself: a file without one was cut short).
pub fn write_sidecar(path: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(Error::Config(format!("{}: not a file name", path.display())));
    };
    let list = sidecar(path);
    write_list(dir, &list.file_name().expect("a file name").to_string_lossy(), &[name])
}

/// Checks every file `<dir>/<list>` names against it; a mismatch is an [`Error::Changed`] naming the file (the
/// caller says what to do about it).
pub fn verify_list(dir: &Path, list: &str) -> Result<()> {
    let list_path = dir.join(list);
    let changed = |path: PathBuf, message: String| Error::Changed { path, message };
    let text = std::fs::read_to_string(&list_path)
        .map_err(|e| changed(list_path.clone(), format!("the checksum list does not read ({e})")))?;
    let mut listed = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((hash, name)) = line.split_once("  ").filter(|(h, _)| h.len() == 64) else {
            return Err(changed(list_path.clone(), format!("the line {line:?} is not `<sha256>  <file>`")));
        };
        let path = dir.join(name);
        let got = sha256_file(&path).map_err(|e| changed(path.clone(), format!("does not read ({e})")))?;
        if got != hash {
            return Err(changed(path, format!("sha256 {got}, but {hash} when it was written: the file changed since")));
        }
        listed += 1;
    }
    if listed == 0 {
        return Err(changed(list_path, "the checksum list is empty".into()));
    }
    Ok(())
}

/// Checks the file `path` against `<path>.sha256`; `Ok(false)` when there is none (written before checksums).
pub fn verify_sidecar(path: &Path) -> Result<bool> {
    let list = sidecar(path);
    if !list.exists() {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    verify_list(dir, &list.file_name().expect("a file name").to_string_lossy())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_block_is_named_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("tram-checksum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weights = dir.join("model.safetensors");
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&weights, &bytes).unwrap();
        assert!(!verify_sidecar(&weights).unwrap(), "no checksum yet: nothing to check");
        write_sidecar(&weights).unwrap();
        assert!(std::fs::read_to_string(sidecar(&weights)).unwrap().ends_with("  model.safetensors\n"));
        assert!(verify_sidecar(&weights).unwrap());
        let mut damaged = bytes.clone();
        damaged[65_536..131_072].fill(0);
        std::fs::write(&weights, &damaged).unwrap();
        let err = verify_sidecar(&weights).unwrap_err();
        let Error::Changed { path, message } = &err else { panic!("{err}") };
        assert_eq!(path, &weights);
        assert!(message.ends_with("when it was written: the file changed since"), "{message}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
