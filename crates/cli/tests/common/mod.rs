//! Helpers shared by the binary's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// Run the binary in `dir` with a clean environment: no stray config, cache in `dir`.
pub async fn metaprompt(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = assert_cmd::Command::cargo_bin("metaprompt").unwrap();
    cmd.current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("METAPROMPT_CACHE", dir.join("cache.sqlite"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shipped SST-2 example.
pub fn sst2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sst2")
}
