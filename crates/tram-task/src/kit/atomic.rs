//! Durable, atomic file writes: write beside the target, fsync, rename, fsync the folder, so that a reader (or a
//! process killed at any moment) sees the old file or the new one, never a part of one. The temporary file
//! (`.<name>.tmp-<pid>`) is removed on any error; one a killed process left is removed by whoever next cleans
//! the folder (the runner, before it trains a run).

use std::path::{Path, PathBuf};

/// The temporary name a write of `path` by this process uses.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is what an interrupted write left behind (`.<name>.tmp-<pid>`).
pub fn is_debris(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn annotated(what: String) -> impl FnOnce(std::io::Error) -> std::io::Error {
    move |e| std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Flushes a folder's entries (a rename inside it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(annotated(format!("syncing {}", dir.display())))
}

/// Writes what `fill` puts into the temporary file it is given, then moves that file to `path` durably.
pub fn write_with<E: From<std::io::Error>>(path: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(annotated(format!("creating the folder {}", parent.display())))?;
    let tmp = tmp_path(path);
    let done = fill(&tmp).and_then(|()| {
        let moved = std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(annotated(format!("syncing {}", tmp.display())))
            .and_then(|()| {
                std::fs::rename(&tmp, path).map_err(annotated(format!(
                    "renaming {} to {}",
                    tmp.display(),
                    path.display()
                )))
            })
            .and_then(|()| sync_dir(parent));
        moved.map_err(E::from)
    });
    if done.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    done
}

/// [`write_with`] of `bytes`.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_with(path, |tmp| std::fs::write(tmp, bytes).map_err(annotated(format!("writing {}", tmp.display()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_neither_debris_nor_a_partial_file() {
        let dir = std::env::temp_dir().join(format!("tram-task-atomic-{}", std::process::id()));
        let path = dir.join("out.txt");
        write_bytes(&path, b"old").unwrap();
        let err = write_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["out.txt"], "no temporary file left behind");
        assert!(is_debris(&tmp_path(&path).file_name().unwrap().to_string_lossy()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
