//! `metaprompt optimize` end to end on the embedded model: an improvement over a weak seed, and
//! a run killed mid-way that resumes to the result of an uninterrupted one.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{metaprompt, sst2, stderr};
use serde_json::Value;

fn models_env() -> String {
    metaprompt_local::fetch::default_models_dir()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_improves_a_weak_seed_on_the_embedded_model() {
    let dir = tempfile::tempdir().unwrap();
    let models = models_env();
    let task = sst2().join("task.toml");
    let run = dir.path().join("run");
    let out = metaprompt(
        dir.path(),
        &[
            "optimize",
            task.to_str().unwrap(),
            "--algo",
            "fewshot",
            "--dev-limit",
            "40",
            "--test-limit",
            "40",
            "--rounds",
            "2",
            "--minibatch",
            "10",
            "--run-dir",
            run.to_str().unwrap(),
            "--json",
        ],
        &[("METAPROMPT_MODELS_DIR", &models)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["kept_seed"], false, "{:#}", o["dev_test"]);
    let seed = o["seed_test"]["mean"].as_f64().unwrap();
    let won = o["winner_test"]["mean"].as_f64().unwrap();
    assert!(won > seed + 0.1, "test: winner {won} vs seed {seed}");
    assert!(o["metric_calls"].as_u64().unwrap() <= 1500);
    for f in [
        "best.toml",
        "report.html",
        "report.json",
        "checkpoint.json",
        "calls.jsonl",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    // Every call's usage is in the run directory, one line each, agreeing with the totals.
    let log = std::fs::read_to_string(run.join("calls.jsonl")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for layer in ["meta", "execution"] {
        let usage = &o[format!("{layer}_usage")];
        let n = usage["calls"].as_u64().unwrap() + usage["failed"].as_u64().unwrap();
        let of_layer: Vec<&Value> = lines.iter().filter(|l| l["layer"] == layer).collect();
        assert_eq!(of_layer.len() as u64, n, "{layer} lines vs {usage}");
        let tokens: u64 = of_layer
            .iter()
            .map(|l| l["input_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(tokens, usage["input_tokens"].as_u64().unwrap(), "{layer}");
    }
    assert!(lines.iter().any(|l| l["model"] == "local:gemma-3-270m"));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Score per round"));
    // The kept prompt is a plain prompt file that evaluates on its own.
    let eval = metaprompt(
        dir.path(),
        &[
            "eval",
            task.to_str().unwrap(),
            "--prompt",
            run.join("best.toml").to_str().unwrap(),
            "--limit",
            "8",
        ],
        &[("METAPROMPT_MODELS_DIR", &models)],
    )
    .await;
    assert!(eval.status.success(), "{}", stderr(&eval));
}

fn optimize_command(dir: &Path, run: &Path, models: &str) -> std::process::Command {
    let task = sst2().join("task.toml");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("metaprompt"));
    cmd.current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("METAPROMPT_MODELS_DIR", models)
        // No shared cache: each run replays from the cache in its own run directory.
        .env("METAPROMPT_NO_CACHE", "1")
        .args([
            "optimize",
            task.to_str().unwrap(),
            "--algo",
            "opro",
            "--dev-limit",
            "20",
            "--test-limit",
            "6",
            "--rounds",
            "2",
            "--patience",
            "5",
            "--per-round",
            "2",
            "--minibatch",
            "10",
            "--seed",
            "11",
            "--run-dir",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

fn checkpoint_round(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoint.json")).ok()?;
    let cp: Value = serde_json::from_str(&text).ok()?;
    cp["stop"].is_null().then(|| cp["round"].as_u64()).flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_on_the_embedded_model_resumes_to_the_result_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let models = models_env();
    let whole = dir.path().join("whole");
    let cut = dir.path().join("cut");
    let d = dir.path().to_path_buf();
    let (w, m) = (whole.clone(), models.clone());
    let status =
        tokio::task::spawn_blocking(move || optimize_command(&d, &w, &m).status().unwrap())
            .await
            .unwrap();
    assert!(status.success());

    // The same run, killed (SIGKILL) once its first round is checkpointed.
    let (d, c, m) = (dir.path().to_path_buf(), cut.clone(), models.clone());
    let killed_at = tokio::task::spawn_blocking(move || {
        let mut child = optimize_command(&d, &c, &m).spawn().unwrap();
        let start = Instant::now();
        loop {
            if let Some(r) = checkpoint_round(&c).filter(|r| *r >= 1) {
                child.kill().unwrap();
                child.wait().unwrap();
                return Some(r);
            }
            if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(300) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let round = killed_at.expect("the run ended before it could be killed");
    assert!(round < 2, "killed mid-way, after round {round}");
    assert!(!cut.join("report.json").exists());

    let out = metaprompt(
        dir.path(),
        &[
            "--no-cache",
            "optimize",
            "--resume",
            cut.to_str().unwrap(),
            "--json",
        ],
        &[("METAPROMPT_MODELS_DIR", &models)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uninterrupted: Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("report.json")).unwrap()).unwrap();
    for key in [
        "winner",
        "best",
        "kept_seed",
        "best_dev",
        "winner_test",
        "stop",
        "metric_calls",
        "meta_calls",
    ] {
        assert_eq!(resumed[key], uninterrupted[key], "{key}");
    }
    assert_eq!(resumed["pool"], uninterrupted["pool"]);
    // Resuming a finished run is a clear error.
    let again = metaprompt(
        dir.path(),
        &["optimize", "--resume", cut.to_str().unwrap()],
        &[("METAPROMPT_MODELS_DIR", &models)],
    )
    .await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("has finished"),
        "{}",
        stderr(&again)
    );
}
