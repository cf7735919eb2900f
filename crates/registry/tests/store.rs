//! The library against every backend. [`suite`] holds what every backend must do, written
//! once against `Store`; `store_suite!` runs all of it on a backend. A new backend adds its
//! fixture (`suite/<backend>.rs`: a fresh, empty library) and one line here, and must pass
//! unchanged. Below the suite: what only a SQLite file can get wrong.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod suite;

use std::path::Path;

use metaprompt_registry::{NewVersion, Origin, RegistryError, SqliteStore, Store};
use suite::prompt;

store_suite!(sqlite, crate::suite::sqlite::fixture);
store_suite!(memory, crate::suite::memory::fixture);

#[tokio::test]
async fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database at all.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(
        &junk,
        "this is not sqlite, just some text that is long enough ".repeat(40),
    )
    .unwrap();
    let e = SqliteStore::open(&junk).await.unwrap_err().to_string();
    assert!(
        e.contains("junk.sqlite") && e.contains("not a metaprompt library"),
        "{e}"
    );

    // A real library whose pages were overwritten in the middle.
    let broken = dir.path().join("broken.sqlite");
    {
        let store = SqliteStore::open(&broken).await.unwrap();
        for i in 0..30 {
            store
                .add(NewVersion::new(
                    "p",
                    prompt(&format!("{i} {}", "x".repeat(500)), &[]),
                    Origin::Human,
                    "x",
                ))
                .await
                .unwrap();
        }
        store.close().await;
    }
    let mut bytes = std::fs::read(&broken).unwrap();
    // The header stays (it is still "a SQLite file"); the schema page behind it is garbage.
    for b in &mut bytes[100..4096] {
        *b = 0xAB;
    }
    std::fs::write(&broken, &bytes).unwrap();
    let _ = std::fs::remove_file(broken.with_extension("sqlite-wal"));
    let _ = std::fs::remove_file(broken.with_extension("sqlite-shm"));
    let outcome = async {
        let store = SqliteStore::open(&broken).await?;
        store.versions("p").await
    }
    .await;
    let Err(e) = outcome else {
        panic!("a corrupted library opened and read");
    };
    let e = e.to_string();
    assert!(
        e.contains("broken.sqlite") && e.contains("not a metaprompt library"),
        "{e}"
    );

    // Another program's SQLite database.
    let foreign = dir.path().join("foreign.sqlite");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&foreign)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE customers (id INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let e = SqliteStore::open(&foreign).await.unwrap_err().to_string();
    assert!(
        e.contains("foreign.sqlite") && e.contains("customers"),
        "{e}"
    );

    // A directory where the file should be.
    let e = SqliteStore::open(dir.path()).await.unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");

    // A library from a newer metaprompt.
    let newer = dir.path().join("newer.sqlite");
    {
        let store = SqliteStore::open(&newer).await.unwrap();
        drop(store);
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&newer);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let e = SqliteStore::open(&newer).await.unwrap_err().to_string();
    assert!(e.contains("newer metaprompt") && e.contains("99"), "{e}");
}

#[tokio::test]
async fn a_read_only_library_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.sqlite");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
            .await
            .unwrap();
        store.close().await;
    }
    set_read_only(&path, true);
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.is_read_only());
    assert_eq!(store.versions("p").await.unwrap().len(), 1);
    let e = store
        .add(NewVersion::new("p", prompt("B.", &[]), Origin::Human, "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("ro.sqlite"), "{e}");
    set_read_only(&path, false);
}

fn set_read_only(path: &Path, on: bool) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, if on { 0o444 } else { 0o644 });
    std::fs::set_permissions(path, p).unwrap();
}

#[tokio::test]
async fn a_library_opens_by_location_and_refuses_what_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let store = metaprompt_registry::open(&path).await.unwrap();
    store
        .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
        .await
        .unwrap();
    assert_eq!(store.location(), path.display().to_string());
    store.close().await;
    // The same file through the SQLite type by name.
    let named = SqliteStore::open(&path).await.unwrap();
    assert_eq!(named.path(), path);
    assert_eq!(named.versions("p").await.unwrap().len(), 1);

    let e = metaprompt_registry::open("postgres://db.invalid/library")
        .await
        .err()
        .unwrap();
    assert!(matches!(e, RegistryError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("`postgres` URL"), "{e}");
}
