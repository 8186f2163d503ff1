//! One server per SQLite database.
//!
//! The appender is the only one to hand out a room's sequence numbers, which is only
//! true while one process writes the database: two `banter` processes on one file would
//! both number changes, and a journal move would then keep one of two acknowledged
//! messages that got the same number. So the database is locked at start: an exclusive
//! advisory lock (`flock`) on `<database>.lock`, held by an open file for the process'
//! lifetime and released by the kernel when it ends, however it ends (`kill -9`
//! included). The file says who holds it, so a second process can name the first.
//!
//! Not covered: processes that ignore the lock (anything but Banter), and filesystems
//! where `flock` is not shared between machines (some network filesystems): run one
//! server per database there by other means.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::storage::StorageError;

/// Held for as long as the storage lives.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

pub fn lock_path(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl DatabaseLock {
    /// Takes the lock, or says who holds it. `holder` describes this process for the
    /// next one that tries (its pid and address).
    pub fn acquire(main: &Path, holder: &str) -> Result<Self, StorageError> {
        let path = lock_path(main);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StorageError::File)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut other = String::new();
                let _ = file.read_to_string(&mut other);
                let other = other.trim();
                return Err(StorageError::Locked(format!(
                    "{} is held by {} (lock file {})",
                    main.display(),
                    if other.is_empty() {
                        "another process"
                    } else {
                        other
                    },
                    path.display()
                )));
            }
            Err(TryLockError::Error(err)) => return Err(StorageError::File(err)),
        }
        file.set_len(0).map_err(StorageError::File)?;
        file.seek(SeekFrom::Start(0)).map_err(StorageError::File)?;
        file.write_all(holder.as_bytes())
            .map_err(StorageError::File)?;
        file.flush().map_err(StorageError::File)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_holds_it() {
        let dir = std::env::temp_dir().join(format!("banter-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        let first = DatabaseLock::acquire(&db, "pid 1 on 127.0.0.1:3000").unwrap();
        let err = DatabaseLock::acquire(&db, "pid 2").unwrap_err().to_string();
        assert!(err.contains("pid 1 on 127.0.0.1:3000"), "{err}");
        drop(first);
        DatabaseLock::acquire(&db, "pid 2").expect("free again");
        let _ = std::fs::remove_dir_all(dir);
    }
}
