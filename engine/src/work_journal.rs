//! The work a task starts outside this process (an EMR step, an Athena
//! query), recorded by the id the service gave it.
//!
//! A task that starts such work records its id here *before* it waits on
//! it; the record is committed to the checkpoint when
//! [`WorkJournal::record`] returns. After a crash, the resumed task finds
//! the id with [`WorkJournal::recorded`] and reconnects to the work
//! instead of starting it again (the durable-execution rule: journal
//! first, then wait). Records are kept per run and task, by a key the
//! task chooses; run-wide work (a cluster the run's tasks share) is kept
//! under the run alone. The journal never decides anything: whether a
//! recorded piece of work is still worth reconnecting to is the task
//! kind's call.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::checkpoint::Checkpoint;
use crate::kind::TaskFailure;

/// One attempt's view of its run's external work.
#[derive(Clone)]
pub struct WorkJournal {
    store: Arc<Store>,
    run_id: String,
    task_id: String,
    attempt: u32,
}

enum Store {
    /// The run's checkpoint file: each call opens it, so that attempts on
    /// any thread record without waiting for the scheduler's connection.
    Checkpoint(PathBuf),
    /// For tests of task kinds that run attempts without a checkpoint.
    Memory(Mutex<BTreeMap<(String, String), serde_json::Value>>),
}

impl fmt::Debug for WorkJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = match &*self.store {
            Store::Checkpoint(path) => path.display().to_string(),
            Store::Memory(_) => "memory".to_string(),
        };
        f.debug_struct("WorkJournal")
            .field("store", &store)
            .field("run_id", &self.run_id)
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl WorkJournal {
    /// The journal of attempt `attempt` of task `task_id`, kept in the
    /// checkpoint at `checkpoint`.
    pub fn in_checkpoint(checkpoint: PathBuf, run_id: &str, task_id: &str, attempt: u32) -> Self {
        WorkJournal {
            store: Arc::new(Store::Checkpoint(checkpoint)),
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            attempt,
        }
    }

    /// A journal kept in memory, shared by its clones: for tests.
    pub fn in_memory(run_id: &str, task_id: &str) -> Self {
        WorkJournal {
            store: Arc::new(Store::Memory(Mutex::new(BTreeMap::new()))),
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            attempt: 1,
        }
    }

    /// Records this task's piece of work `key`; committed on return.
    pub fn record(&self, key: &str, value: &serde_json::Value) -> Result<(), TaskFailure> {
        self.put(&self.task_id, key, value)
    }

    /// What this task (in this attempt or an earlier one, before a resume
    /// too) recorded as `key`.
    pub fn recorded(&self, key: &str) -> Result<Option<serde_json::Value>, TaskFailure> {
        self.get(&self.task_id, key)
    }

    /// Records run-wide work `key` (shared by the run's tasks).
    pub fn record_for_run(&self, key: &str, value: &serde_json::Value) -> Result<(), TaskFailure> {
        self.put("", key, value)
    }

    /// Run-wide work recorded as `key`.
    pub fn recorded_for_run(&self, key: &str) -> Result<Option<serde_json::Value>, TaskFailure> {
        self.get("", key)
    }

    fn put(&self, task_id: &str, key: &str, value: &serde_json::Value) -> Result<(), TaskFailure> {
        match &*self.store {
            Store::Checkpoint(path) => Checkpoint::open(path)
                .and_then(|mut c| {
                    c.record_external_work(&self.run_id, task_id, key, self.attempt, value)
                })
                .map_err(|e| {
                    TaskFailure::new(format!(
                        "cannot record {key} = {value} in the checkpoint before waiting on it: {e}"
                    ))
                }),
            Store::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((task_id.to_string(), key.to_string()), value.clone());
                Ok(())
            }
        }
    }

    fn get(&self, task_id: &str, key: &str) -> Result<Option<serde_json::Value>, TaskFailure> {
        match &*self.store {
            Store::Checkpoint(path) => Checkpoint::open(path)
                .and_then(|c| c.external_work(&self.run_id))
                .map(|work| {
                    work.into_iter()
                        .find(|w| w.task_id == task_id && w.key == key)
                        .map(|w| w.value)
                })
                .map_err(|e| {
                    TaskFailure::new(format!("cannot read the run's recorded {key}: {e}"))
                }),
            Store::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(task_id.to_string(), key.to_string()))
                .cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorded_work_survives_a_new_journal_on_the_same_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flux.db");
        let mut checkpoint = Checkpoint::open(&path).unwrap();
        checkpoint
            .create_run("r1", "d", "/d.toml", &json!({}), "aws", &[])
            .unwrap();
        let first = WorkJournal::in_checkpoint(path.clone(), "r1", "clean", 1);
        first.record("step", &json!({"step_id": "s-1"})).unwrap();
        first.record_for_run("cluster", &json!("j-1")).unwrap();
        first.record("step", &json!({"step_id": "s-2"})).unwrap();

        // A resume: a new process, a later attempt.
        let later = WorkJournal::in_checkpoint(path.clone(), "r1", "clean", 2);
        assert_eq!(
            later.recorded("step").unwrap(),
            Some(json!({"step_id": "s-2"}))
        );
        assert_eq!(
            later.recorded_for_run("cluster").unwrap(),
            Some(json!("j-1"))
        );
        let other = WorkJournal::in_checkpoint(path.clone(), "r1", "report", 1);
        assert_eq!(other.recorded("step").unwrap(), None);
        assert_eq!(
            other.recorded_for_run("cluster").unwrap(),
            Some(json!("j-1"))
        );

        let work = checkpoint.external_work("r1").unwrap();
        let keys: Vec<(&str, &str, u32)> = work
            .iter()
            .map(|w| (w.task_id.as_str(), w.key.as_str(), w.attempt))
            .collect();
        assert_eq!(keys, [("clean", "step", 1), ("", "cluster", 1)]);
        assert_eq!(checkpoint.run("r1").unwrap().target, "aws");
    }
}
