//! A directory of its own for one spool test, removed when the test ends.

use std::path::PathBuf;

/// A fresh directory under the system's temporary directory.
pub(super) struct TestDir(pub(super) PathBuf);

impl TestDir {
    pub(super) fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!("shardgate-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
