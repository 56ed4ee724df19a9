//! Advisory file locks that tell a live holder from a dead one: a run being
//! driven, a temp file or staging folder being written, a version being
//! read, a runtime being provisioned.
//!
//! A [`FileLock`] owns the locked open file and releases the lock when it
//! is dropped; the kernel releases it when the holder's process dies, so a
//! crash never leaves a lock behind. On Linux this is `flock(2)` (through
//! `std::fs::File::lock`): the lock belongs to the open file, so two opens
//! of one path exclude each other even within one process.
//!
//! The lock is advisory: it holds back only code that takes it. It must
//! never be the only thing that keeps data consistent across a crash; that
//! is the job of renames and fsyncs.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

/// A file locked by this process, until dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Waits for the exclusive lock on `file`.
    pub fn exclusive(file: File) -> io::Result<FileLock> {
        retry_interrupted(|| file.lock())?;
        Ok(FileLock { file })
    }

    /// Waits for a shared lock on `file`: other shared holders may share
    /// it, an exclusive one waits for all of them.
    pub fn shared(file: File) -> io::Result<FileLock> {
        retry_interrupted(|| file.lock_shared())?;
        Ok(FileLock { file })
    }

    /// Takes the exclusive lock if nobody holds any lock on `file`;
    /// `None` if somebody does.
    pub fn try_exclusive(file: File) -> io::Result<Option<FileLock>> {
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(FileLock { file })),
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// Opens the lock file at `path` (created if missing, never truncated)
    /// and waits for its exclusive lock.
    pub fn create_exclusive(path: &Path) -> io::Result<FileLock> {
        FileLock::exclusive(open_lock_file(path)?)
    }

    /// Opens the lock file at `path` (created if missing, never truncated)
    /// and takes its exclusive lock if nobody holds it; `None` if somebody
    /// does.
    pub fn try_create_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        FileLock::try_exclusive(open_lock_file(path)?)
    }

    /// The locked file, to read, write or inspect while the lock is held.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too, but not while a clone of
        // the descriptor (`File::try_clone`) is still open somewhere.
        let _ = self.file.unlock();
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// A signal arriving while we wait for a lock is no reason to give up.
fn retry_interrupted(mut lock: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match lock() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_excludes_every_other_open_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::create_exclusive(&path).unwrap();
        assert!(FileLock::try_create_exclusive(&path).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_create_exclusive(&path).unwrap().is_some());
    }

    #[test]
    fn shared_locks_coexist_and_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version");
        std::fs::create_dir(&path).unwrap();
        let one = FileLock::shared(File::open(&path).unwrap()).unwrap();
        let two = FileLock::shared(File::open(&path).unwrap()).unwrap();
        assert!(
            FileLock::try_exclusive(File::open(&path).unwrap())
                .unwrap()
                .is_none()
        );
        drop((one, two));
        assert!(
            FileLock::try_exclusive(File::open(&path).unwrap())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_cloned_descriptor_does_not_outlive_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::create_exclusive(&path).unwrap();
        let clone = held.file().try_clone().unwrap();
        drop(held);
        assert!(FileLock::try_create_exclusive(&path).unwrap().is_some());
        drop(clone);
    }
}
