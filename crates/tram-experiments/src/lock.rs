//! Claims on runs, so that one process trains a run while others skip it: an exclusive advisory lock (`flock`) on
//! the run folder's `lock` file, which records the holder (host, pid, start time, Slurm job) and what it is doing.
//!
//! The kernel drops the lock when its process ends, however it ends (SIGKILL, a pre-empted job, a crash), so a
//! free lock whose record still says `training` was left by a process that died: the next claimant takes it over
//! and says whose it was. This holds across machines on file systems whose `flock` works between clients (local
//! disks; NFS v3 and v4, where Linux maps it to byte-range locks; Lustre mounted with `-o flock`).
//!
//! The record is rewritten in place, not renamed into place: a rename would swap the file, and with it the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic::now_s;

/// What the holder of a run's lock is doing, or did last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activity {
    Training,
    /// The run's results are written.
    Finished,
    /// The holder stopped with an error (the run is left to be resumed).
    Stopped,
}

/// Who holds (or held) a run's lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub started_unix_s: u64,
    /// `SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`, or `SLURM_JOB_ID`, inside a Slurm job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    pub activity: Activity,
}

impl Holder {
    /// This process, now.
    pub fn me() -> Self {
        Self {
            host: crate::meta::host(),
            pid: std::process::id(),
            started_unix_s: now_s(),
            slurm_job: crate::meta::slurm_job(),
            activity: Activity::Training,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)?;
        if let Some(job) = &self.slurm_job {
            write!(f, " (Slurm job {job})")?;
        }
        write!(f, ", started at unix time {}", self.started_unix_s)
    }
}

/// A run claimed by this process; the lock is released when it is dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    pub holder: Holder,
    /// Whether the record is ours (after [`RunLock::training`]).
    recorded: bool,
}

/// The outcome of trying to claim a run.
#[derive(Debug)]
pub enum Claim {
    /// Ours, with the record of a holder that died while training, when there was one.
    Claimed(RunLock, Option<Holder>),
    /// Held by a live process, whose record is given when it reads.
    Busy(Option<Holder>),
}

fn open(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))
}

fn read_record(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a live process holds the lock at `path` (and its record): tries the lock and lets it go at once.
pub fn held(path: &Path) -> Result<Option<Option<Holder>>> {
    if !path.exists() {
        return Ok(None);
    }
    Ok(match try_claim(path)? {
        Claim::Busy(h) => Some(h),
        Claim::Claimed(..) => None,
    })
}

/// Claims the run whose lock file is `path` without waiting. The record is left as it is until
/// [`RunLock::training`]: a claimant that finds the run finished lets it go without a trace.
pub fn try_claim(path: &Path) -> Result<Claim> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {
            let previous = read_record(&mut file);
            let lock = RunLock { file, path: path.to_path_buf(), holder: Holder::me(), recorded: false };
            Ok(Claim::Claimed(lock, previous.filter(|h| h.activity == Activity::Training)))
        }
        Err(TryLockError::WouldBlock) => Ok(Claim::Busy(read_record(&mut file))),
        Err(TryLockError::Error(e)) => Err(e).with_context(|| {
            format!(
                "locking {} (the results folder must support flock: see the README, \"Long runs and clusters\")",
                path.display()
            )
        }),
    }
}

/// Claims the run whose lock file is `path`, waiting for its holder to let it go.
pub fn claim_waiting(path: &Path) -> Result<(RunLock, Option<Holder>)> {
    let mut file = open(path)?;
    file.lock().with_context(|| format!("waiting for the lock {}", path.display()))?;
    let previous = read_record(&mut file).filter(|h| h.activity == Activity::Training);
    Ok((RunLock { file, path: path.to_path_buf(), holder: Holder::me(), recorded: false }, previous))
}

impl RunLock {
    /// Records this process as the run's trainer.
    pub fn training(&mut self) -> Result<()> {
        self.recorded = true;
        self.write_record()
    }

    fn write_record(&mut self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.holder)?;
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write(&mut self.file).with_context(|| format!("writing the lock record {}", self.path.display()))
    }

    /// Records that the run's results are written; the lock is released when `self` is dropped.
    pub fn finish(mut self) -> Result<()> {
        self.holder.activity = Activity::Finished;
        self.write_record()
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.recorded && self.holder.activity == Activity::Training {
            self.holder.activity = Activity::Stopped;
            if let Err(e) = self.write_record() {
                tracing::warn!("{e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Every test here takes locks, and one spawns a process: between fork and exec a child holds copies of this
    // process's descriptors (std opens files O_CLOEXEC, which closes them only at the exec), a lock file another
    // test has just closed among them, which keeps that lock held. So one test at a time: any test of this binary
    // that spawns a process or takes a lock holds the binary's lock.
    use tram_core::testing::serial;

    fn record(path: &Path) -> Option<Holder> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tram-lock-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        d
    }

    #[test]
    fn one_holder_at_a_time_and_the_record_says_who() {
        let _g = serial();
        let path = dir("one").join("lock");
        let Claim::Claimed(mut first, None) = try_claim(&path).unwrap() else { panic!("a new lock is free") };
        first.training().unwrap();
        // flock locks belong to an open file, so a second open in the same process is refused like another process.
        let Claim::Busy(Some(holder)) = try_claim(&path).unwrap() else { panic!("a held lock is busy") };
        assert_eq!((holder.pid, holder.activity), (std::process::id(), Activity::Training));
        assert!(held(&path).unwrap().is_some());
        first.finish().unwrap();
        assert_eq!(record(&path).unwrap().activity, Activity::Finished);
        let Claim::Claimed(_again, previous) = try_claim(&path).unwrap() else { panic!("released") };
        assert_eq!(previous, None, "a finished holder is not a dead one");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over_and_named() {
        let _g = serial();
        let path = dir("stale").join("lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // What a SIGKILLed trainer leaves: its record says training, and nobody holds the lock.
        let dead = Holder {
            host: "node7".into(),
            pid: 4242,
            started_unix_s: 1,
            slurm_job: Some("9_1".into()),
            activity: Activity::Training,
        };
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        assert!(held(&path).unwrap().is_none());
        let Claim::Claimed(mut lock, Some(previous)) = try_claim(&path).unwrap() else { panic!("stale: taken over") };
        assert_eq!(previous, dead);
        lock.training().unwrap();
        assert_eq!(record(&path).unwrap().pid, std::process::id(), "the record is the new holder's");
        drop(lock);
        assert_eq!(record(&path).unwrap().activity, Activity::Stopped, "dropped while training: stopped");
        let (_lock, previous) = claim_waiting(&path).unwrap();
        assert_eq!(previous, None, "a holder that stopped with an error released the lock itself");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn another_process_holds_the_lock_until_it_is_killed() {
        let _g = serial();
        let path = dir("killed").join("lock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // util-linux's flock(1) takes the same kind of lock in another process (with --close it holds it itself,
        // and its command does not): the command says when the lock is taken, then waits for its input to end.
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--close"])
            .arg(&path)
            .args(["sh", "-c", "echo locked; exec cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "locked\n", "flock(1) took the lock");
        assert!(matches!(try_claim(&path).unwrap(), Claim::Busy(None)), "held by a live process");
        child.kill().unwrap(); // SIGKILL to flock(1); its `cat` ends with its input
        child.wait().unwrap();
        drop(child.stdin.take());
        assert!(matches!(try_claim(&path).unwrap(), Claim::Claimed(..)), "the kernel released it");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
