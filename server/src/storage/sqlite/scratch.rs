//! `sqlite::memory:` as a private scratch file: the appender thread and the readers need
//! one database between them, and every connection to an in-memory database is a
//! database of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::storage::StorageError;

/// A database file that lives as long as the storage: what `sqlite::memory:` opens. The
/// writer thread and the readers need one database between them, and every connection
/// to an in-memory database is a database of its own.
pub struct ScratchFile(pub PathBuf);

const SCRATCH_PREFIX: &str = "banter-memory-";

impl ScratchFile {
    pub fn new() -> Result<Self, StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if NEXT.load(Ordering::Relaxed) == 0 {
            remove_orphaned_scratch_files();
        }
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| StorageError::File(e.into()))?;
        let dir = std::env::temp_dir().join(format!(
            "{SCRATCH_PREFIX}{}-{}-{:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            u64::from_le_bytes(nonce)
        ));
        std::fs::create_dir(&dir).map_err(StorageError::File)?;
        Ok(Self(dir))
    }

    pub fn database(&self) -> PathBuf {
        self.0.join("banter.db")
    }
}

/// A process that ends without dropping its storage (a test binary, a killed server)
/// leaves its scratch files behind: remove those whose process is gone. Only where
/// `/proc` tells which processes live.
fn remove_orphaned_scratch_files() {
    let proc = std::path::Path::new("/proc");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    if !proc.join("self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !proc.join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
