//! Durable, atomic file writes: write beside the target, fsync, rename, fsync the folder, so that a reader (or a
//! process killed at any moment) sees the old file or the new one, never a part of one. The temporary file
//! (`.<name>.tmp-<pid>`) is removed on any error; one a killed process left is removed by whoever next cleans
//! the folder (the runner, before it trains a run).

use std::path::{Path, PathBuf};

/// The temporary name a write of `path` by this process uses: `.<name>.tmp-<pid>-<host>`, the host as 8 hex
/// digits of its name's hash, so that a folder shared by several machines tells whose writer left a file.
pub fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}-{}", std::process::id(), host_tag()))
}

/// This machine's host name.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn host_tag() -> String {
    format!("{:08x}", crate::rng::fnv1a(0, host().as_bytes()) as u32)
}

/// Removes, from the folder `dir`, the temporary files whose names start with `.<prefix>` and that a process of
/// this machine left when it was killed while writing (its pid no longer runs); returns what it removed. Files of
/// live writers and of other machines stay. Needs `/proc` to tell a live process (elsewhere it removes nothing).
pub fn remove_debris(dir: &Path, prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    if !Path::new("/proc/self").exists() {
        return Ok(vec![]);
    }
    let mine = host_tag();
    let mut removed = vec![];
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, writer)) =
            name.strip_prefix('.').filter(|n| n.starts_with(prefix)).and_then(|n| n.rsplit_once(".tmp-"))
        else {
            continue;
        };
        let (pid, host) = writer.split_once('-').unwrap_or((writer, ""));
        let dead = pid.parse::<u32>().is_ok_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
        if dead && host.starts_with(&mine) {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
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

    #[test]
    fn debris_of_killed_writers_of_this_machine_goes_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("tram-task-debris-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tag = host_tag();
        // pid 4294967295 cannot run (Linux's pids stay below 2^22).
        let dead = format!(".table3-quick.csv.tmp-4294967295-{tag}");
        let dead_plot = format!(".table3-quick.png.tmp-4294967295-{tag}.png");
        let live = tmp_path(&dir.join("table3-quick-long.csv")).file_name().unwrap().to_string_lossy().into_owned();
        let elsewhere = ".table3-quick-std.csv.tmp-4294967295-0badc0de".to_string();
        let other_sweep = format!(".table4-quick.csv.tmp-4294967295-{tag}");
        for name in [&dead, &dead_plot, &live, &elsewhere, &other_sweep] {
            std::fs::write(dir.join(name), b"half").unwrap();
        }
        let mut removed: Vec<String> = remove_debris(&dir, "table3-quick")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(removed, [dead, dead_plot]);
        for name in [&live, &elsewhere, &other_sweep] {
            assert!(dir.join(name).exists(), "{name} stays");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
