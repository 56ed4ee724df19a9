//! Stopping an attempt's blocking work when the attempt is given up.
//!
//! A timeout or a cancel drops the attempt's future, but a closure handed
//! to `tokio::task::spawn_blocking` runs on regardless. Kinds whose local
//! backend does long blocking work (uploading files, crawling tables) hold
//! a [`CancelOnDrop`] in the attempt's future and poll its flag between
//! units of work, so that a given-up attempt stops at the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets its flag when dropped, that is when the attempt's future is.
#[derive(Default)]
pub struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    /// The flag the blocking work polls; `true` once this guard is dropped.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_turns_true_when_the_guard_is_dropped() {
        let guard = CancelOnDrop::default();
        let flag = guard.flag();
        assert!(!flag.load(Ordering::Relaxed));
        drop(guard);
        assert!(flag.load(Ordering::Relaxed));
    }
}
