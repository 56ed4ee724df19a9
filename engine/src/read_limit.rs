//! Reading a whole input file with a ceiling on what is read, not only on
//! what the file system says its size is.
//!
//! A size check on `metadata` alone does not bound a read: pipes, character
//! devices (`/dev/zero`) and `/proc` files report a size of 0 and then yield
//! as much as is asked for, so `std::fs::read` on them grows without end.
//! These functions stop after `limit + 1` bytes: one byte past the limit is
//! enough to know the input is too large, and memory stays at the limit.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Why a bounded read gave no contents.
#[derive(Debug, thiserror::Error)]
pub enum ReadLimitError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// More than `limit` bytes. `size` is the size the file system reports
    /// for a regular file; a pipe or a device has none, and `kind` says
    /// what it is instead.
    #[error("{}", too_large(*.size, *.limit, .kind))]
    TooLarge {
        size: Option<u64>,
        limit: u64,
        kind: &'static str,
    },
}

fn too_large(size: Option<u64>, limit: u64, kind: &str) -> String {
    match size {
        Some(size) => format!("it is {size} bytes; at most {limit} are read"),
        None => {
            format!("it is {kind} that gave more than {limit} bytes, and at most {limit} are read")
        }
    }
}

/// Reads the whole of `path`, refusing it once more than `limit` bytes
/// arrive (or up front, for a regular file whose size says so).
///
/// A named pipe that no process has open for writing gives an error at
/// once instead of waiting for a writer that may never come (a plain
/// `open` blocks until one does); one with a writer is read as it writes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadLimitError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK makes opening a FIFO return at once; it changes nothing
    // for other files. Reads are then made blocking again, so that a pipe
    // with a writer waits for its data, and one without ends (EOF) at once.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: fcntl(2) on a descriptor `file` owns and keeps open for the
    // duration of the calls; F_GETFL/F_SETFL take and return plain ints.
    unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error().into());
        }
    }
    read_limited_from(file, limit)
}

/// [`read_limited`] on a file already open (opened with flags of the
/// caller's choosing, e.g. `O_NONBLOCK` to check its type first).
pub fn read_limited_from(file: File, limit: u64) -> Result<Vec<u8>, ReadLimitError> {
    let meta = file.metadata()?;
    let kind = describe(&meta.file_type());
    if meta.is_file() && meta.len() > limit {
        return Err(ReadLimitError::TooLarge {
            size: Some(meta.len()),
            limit,
            kind,
        });
    }
    // The reported size is a hint only (a regular file may grow while we
    // read; other files report 0): `take` is the bound.
    let hint = if meta.is_file() { meta.len() } else { 0 };
    let mut bytes = Vec::with_capacity(usize::try_from(hint.min(limit)).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.is_empty() && meta.file_type().is_fifo() {
        return Err(ReadLimitError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "it is a pipe (FIFO) that no process was writing to, so there was nothing to read",
        )));
    }
    if bytes.len() as u64 > limit {
        return Err(ReadLimitError::TooLarge {
            size: meta.is_file().then_some(bytes.len() as u64),
            limit,
            kind,
        });
    }
    Ok(bytes)
}

/// What a file is, in words for an error message ("a regular file", "a
/// pipe (FIFO)", ...).
pub fn describe(kind: &std::fs::FileType) -> &'static str {
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_within_the_limit_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_limited(&path, 10).unwrap(), b"0123456789");
    }

    #[test]
    fn a_regular_file_over_the_limit_is_refused_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        match read_limited(&path, 9) {
            Err(ReadLimitError::TooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (Some(10), 9));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_pipe_nobody_writes_to_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo(3) only reads it.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        match read_limited(&path, 1000) {
            Err(ReadLimitError::Io(e)) => {
                assert!(e.to_string().contains("no process was writing"), "{e}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn an_endless_device_stops_one_byte_past_the_limit() {
        // /dev/zero reports size 0 and never ends.
        match read_limited(Path::new("/dev/zero"), 1000) {
            Err(ReadLimitError::TooLarge { size, limit, kind }) => {
                assert_eq!((size, limit, kind), (None, 1000, "a character device"));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
