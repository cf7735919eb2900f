//! Mutation tests of the parsers: the example task, prompt and dataset files with random bytes
//! flipped, inserted and deleted, and arbitrary bytes. Never a panic, and every error names its
//! file. (Seeded, so a failure reproduces; a few hundred cases, so it runs in about a second.)

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::dataset::{self, Mapping};
use crate::prompt::PromptFile;
use crate::task::Task;

fn mutate(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..4) {
            0 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            1 => out.insert(at, rng.random()),
            2 if at < out.len() => {
                out.remove(at);
            }
            _ => {
                let special = b"{}[]\"=\n,:\xff";
                out.insert(at, special[rng.random_range(0..special.len())]);
            }
        }
    }
    out
}

fn arbitrary(rng: &mut StdRng) -> Vec<u8> {
    (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sst2")
}

fn cases(seed: u64, original: &[u8], n: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if i % 5 == 0 {
                arbitrary(&mut rng)
            } else {
                mutate(&mut rng, original)
            }
        })
        .collect()
}

#[test]
fn mutated_task_files_never_panic_and_errors_name_the_file() {
    let original = std::fs::read(examples().join("task.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The task's prompt and data, so a mutation that keeps the file valid still loads.
    for sub in ["prompts", "data"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in std::fs::read_dir(examples().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    let path = dir.path().join("task.toml");
    for bytes in cases(1, &original, 200) {
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = Task::load(&path) {
            let e = e.to_string();
            assert!(e.contains(&*dir.path().to_string_lossy()), "{e}");
        }
    }
}

#[test]
fn mutated_prompt_files_never_panic_and_errors_name_the_file() {
    let original = std::fs::read(examples().join("prompts/four_shot.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let vars = [("sentence".to_string(), serde_json::json!("fine"))].into();
    for bytes in cases(2, &original, 200) {
        std::fs::write(&path, &bytes).unwrap();
        match PromptFile::load(&path) {
            Err(e) => assert!(e.to_string().contains("p.toml"), "{e}"),
            Ok(p) => {
                for format in [
                    metaprompt_llm::PromptFormat::Text,
                    metaprompt_llm::PromptFormat::Chat,
                ] {
                    if let Err(e) = p.render(&vars, format, Some("label")) {
                        assert!(e.to_string().contains("p.toml"), "{e}");
                    }
                }
            }
        }
    }
}

#[test]
fn mutated_datasets_never_panic_and_errors_name_the_file() {
    let original: Vec<u8> = std::fs::read(examples().join("data/dev.jsonl"))
        .unwrap()
        .split(|b| *b == b'\n')
        .take(5)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let dir = tempfile::tempdir().unwrap();
    let mapping = Mapping {
        inputs: vec!["sentence".into()],
        output: Some("label".into()),
        ..Mapping::default()
    };
    for ext in ["jsonl", "json", "csv"] {
        let path = dir.path().join(format!("d.{ext}"));
        for bytes in cases(3, &original, 100) {
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = dataset::load(&path, &mapping) {
                assert!(e.to_string().contains(&format!("d.{ext}")), "{e}");
            }
        }
    }
}

#[test]
fn mutated_config_files_never_panic_and_errors_name_the_file() {
    let original = b"[cache]\nenabled = true\n\n[providers.openai]\nbase_url = \"http://localhost:8080/v1\"\n\n[models.\"openai:gpt-4o\"]\nconcurrency = 4\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metaprompt.toml");
    for bytes in cases(4, original, 200) {
        std::fs::write(&path, &bytes).unwrap();
        if let Err(e) = metaprompt_llm::Config::load(&path) {
            assert!(e.to_string().contains("metaprompt.toml"), "{e}");
        }
    }
}
