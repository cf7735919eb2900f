//! The SQLite backend's fixture: a library file in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use metaprompt_registry::Store;

use super::Fixture;

#[derive(Debug)]
pub struct SqliteFixture {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Fixture for SqliteFixture {
    async fn open(&self) -> Arc<dyn Store> {
        metaprompt_registry::open(&self.path).await.unwrap()
    }
}

pub async fn fixture() -> SqliteFixture {
    let dir = tempfile::tempdir().unwrap();
    SqliteFixture {
        path: dir.path().join("lib/library.sqlite"),
        _dir: dir,
    }
}
