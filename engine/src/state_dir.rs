//! Where a project's runs live on disk: `flux.db` (the checkpoint) and one
//! folder per task attempt with its logs and scratch space.
//!
//! ```text
//! STATE_DIR/flux.db
//! STATE_DIR/run.lock                                held while a run or resume goes on
//! STATE_DIR/runs/RUN_ID/lock                        held while a process runs the run
//! STATE_DIR/runs/RUN_ID/TASK_ID/N/stdout.log        attempt N's output
//! STATE_DIR/runs/RUN_ID/TASK_ID/N/scratch/          attempt N's own empty folder
//! ```

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::file_lock::FileLock;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The root is made absolute, because tasks run in their DAG file's
    /// folder and must still find their attempt folders.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        StateDir { root }
    }

    /// `--state-dir` if given, else `$FLUX_HOME`, else `.flux/` in the
    /// working directory.
    pub fn resolve(explicit: Option<PathBuf>) -> Self {
        let root = explicit
            .or_else(|| {
                std::env::var_os("FLUX_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(".flux"));
        StateDir::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join("flux.db")
    }

    /// Opens (creating it if needed) the checkpoint database.
    pub fn open_checkpoint(&self) -> Result<Checkpoint, CheckpointError> {
        std::fs::create_dir_all(&self.root).map_err(|source| CheckpointError::StateDir {
            path: self.root.display().to_string(),
            source,
        })?;
        Checkpoint::open(&self.checkpoint_path())
    }

    /// Opens the checkpoint if it exists and has runs, for the commands
    /// that only inspect (`runs`, `show`, `trace`). Where the state dir can
    /// be written it is opened as by a run (so that closing it folds the
    /// WAL into `flux.db` and leaves no `-wal`/`-shm` files behind); where
    /// it cannot, it is opened read-only, creating and changing nothing.
    pub fn existing_checkpoint(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.checkpoint_path();
        if !path.exists() {
            return Ok(None);
        }
        match Checkpoint::open(&path) {
            Ok(checkpoint) => Ok(Some(checkpoint)),
            Err(e) if e.is_no_write_access() => Checkpoint::open_read_only(&path),
            Err(e) => Err(e),
        }
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.root.join("runs").join(run_id)
    }

    pub fn attempt_dir(&self, run_id: &str, task_id: &str, attempt: u32) -> PathBuf {
        self.run_dir(run_id).join(task_id).join(attempt.to_string())
    }

    /// Takes the run's lock, so that two processes never drive one run.
    /// The kernel drops the lock when the holder dies (see
    /// [`crate::file_lock`]), so a crashed run is never left locked.
    pub fn lock_run(&self, run_id: &str) -> io::Result<Option<RunLock>> {
        let dir = self.run_dir(run_id);
        std::fs::create_dir_all(&dir)?;
        Ok(FileLock::try_create_exclusive(&dir.join("lock"))?.map(|lock| RunLock { _lock: lock }))
    }

    /// Takes the state dir's lock, which a run or resume holds from start
    /// to end: runs of one state dir share its local S3 store and catalog,
    /// and two at once break each other's writes (a Spark job replaces a
    /// folder another run's job is reading), so they go one at a time.
    /// `Ok(Err(holder))` when another process holds it: what it wrote
    /// there, its run id and process id.
    pub fn lock_state(&self, run_id: &str) -> io::Result<Result<StateLock, String>> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(&self.root)?;
        let path = self.root.join("run.lock");
        let Some(lock) = FileLock::try_create_exclusive(&path)? else {
            let mut holder = String::new();
            if let Ok(mut file) = File::open(&path) {
                let _ = file.read_to_string(&mut holder);
            }
            return Ok(Err(holder.trim().to_string()));
        };
        let mut file = lock.file();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "run {run_id}, process {}", std::process::id())?;
        Ok(Ok(StateLock { _lock: lock }))
    }

    /// Whether some process holds the run's lock right now.
    pub fn is_run_active(&self, run_id: &str) -> bool {
        let path = self.run_dir(run_id).join("lock");
        // Read access is enough to probe a `flock`, and all an inspecting
        // user may have.
        let Ok(file) = File::open(path) else {
            return false;
        };
        // A lock we could take was free; we only probed, so it is let go
        // at once. A lock we could not probe counts as held.
        !matches!(FileLock::try_exclusive(file), Ok(Some(_)))
    }
}

/// Held while a process drives a run; released on drop or process death.
pub struct RunLock {
    _lock: FileLock,
}

/// Held while a run or resume of the state dir goes on; released on drop
/// or process death.
pub struct StateLock {
    _lock: FileLock,
}
