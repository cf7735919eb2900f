//! Property tests of the parsers (proptest): the example task, prompt, dataset and config files
//! with bytes flipped, inserted, deleted or replaced by TOML/JSON/CSV punctuation, and arbitrary
//! bytes. Never a panic, and every error names its file. 256 cases per parser (proptest shrinks
//! a failure to a small input and keeps it under `proptest-regressions/` to replay first).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config as PropConfig;

use crate::dataset::{self, Mapping};
use crate::prompt::PromptFile;
use crate::task::Task;

/// One edit of a file: at a position (a share of its length), flip a bit, insert a byte,
/// delete a byte, or insert a character that matters to the parsers.
#[derive(Debug, Clone)]
enum Edit {
    Flip(f64, u8),
    Insert(f64, u8),
    Delete(f64),
    Special(f64, usize),
}

const SPECIAL: &[u8] = b"{}[]\"'=\n,:#\\\xff\x00";

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0.0..1.0f64;
    prop_oneof![
        (at.clone(), 0..8u8).prop_map(|(a, b)| Edit::Flip(a, b)),
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        at.clone().prop_map(Edit::Delete),
        (at, 0..SPECIAL.len()).prop_map(|(a, k)| Edit::Special(a, k)),
    ]
}

fn apply(original: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = original.to_vec();
    let pos = |share: f64, len: usize| ((share * len as f64) as usize).min(len);
    for e in edits {
        match *e {
            Edit::Flip(a, bit) if !out.is_empty() => {
                let i = pos(a, out.len() - 1);
                out[i] ^= 1 << bit;
            }
            Edit::Insert(a, b) => out.insert(pos(a, out.len()), b),
            Edit::Delete(a) if !out.is_empty() => {
                out.remove(pos(a, out.len() - 1));
            }
            Edit::Special(a, k) => out.insert(pos(a, out.len()), SPECIAL[k]),
            _ => {}
        }
    }
    out
}

/// A mutated copy of `original` (1 to 4 edits), or arbitrary bytes (a fifth of the cases).
fn file_like(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(edit(), 1..5).prop_map(move |e| apply(&original, &e)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn config() -> PropConfig {
    PropConfig {
        cases: 256,
        // Failures are kept next to this file (proptest-regressions/) and replayed first.
        ..PropConfig::default()
    }
}

/// A config file using most tables.
const CONFIG: &[u8] = b"[cache]\nenabled = true\n\n[local]\ncontext_size = 2048\n\n\
    [providers.openai]\nbase_url = \"http://localhost:8080/v1\"\ntimeout_secs = 30\n\n\
    [models.\"openai:gpt-4o\"]\nconcurrency = 4\ncontext_tokens = 128000\n\
    pricing = { input_per_mtok = 2.5, output_per_mtok = 10.0 }\n";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sst2")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A task folder with the example's prompts and data, so a mutation that keeps the task file
/// valid still loads.
fn task_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for sub in ["prompts", "data"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(examples().join(sub)).expect("the example folder") {
            let e = e.expect("an entry");
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    dir
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn task_files_never_panic_and_errors_name_the_file(
        bytes in file_like(read(&examples().join("task.toml")))
    ) {
        let dir = task_dir();
        let path = dir.path().join("task.toml");
        std::fs::write(&path, &bytes).expect("write");
        match Task::load(&path) {
            Err(e) => {
                let e = e.to_string();
                prop_assert!(e.contains(&*dir.path().to_string_lossy()), "{}", e);
            }
            // A task that loads renders its seed prompt or says where it failed.
            Ok(task) => {
                for split in ["train", "dev"] {
                    if let Err(e) = task.examples(split) {
                        let e = e.to_string();
                        prop_assert!(e.contains(&*dir.path().to_string_lossy()), "{}", e);
                    }
                }
            }
        }
    }

    #[test]
    fn prompt_files_never_panic_and_errors_name_the_file(
        bytes in file_like(read(&examples().join("prompts/four_shot.toml")))
    ) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, &bytes).expect("write");
        let vars = [("sentence".to_string(), serde_json::json!("fine"))].into();
        match PromptFile::load(&path) {
            Err(e) => prop_assert!(e.to_string().contains("p.toml"), "{}", e),
            Ok(p) => {
                for format in [
                    metaprompt_llm::PromptFormat::Text,
                    metaprompt_llm::PromptFormat::Chat,
                ] {
                    if let Err(e) = p.render(&vars, format, Some("label")) {
                        prop_assert!(e.to_string().contains("p.toml"), "{}", e);
                    }
                }
            }
        }
    }

    #[test]
    fn datasets_never_panic_and_errors_name_the_file(
        bytes in file_like(
            read(&examples().join("data/dev.jsonl"))
                .split(|b| *b == b'\n')
                .take(5)
                .collect::<Vec<_>>()
                .join(&b'\n'),
        ),
        ext in prop_oneof![Just("jsonl"), Just("json"), Just("csv")],
    ) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mapping = Mapping {
            inputs: vec!["sentence".into()],
            output: Some("label".into()),
            ..Mapping::default()
        };
        let path = dir.path().join(format!("d.{ext}"));
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = dataset::load(&path, &mapping) {
            prop_assert!(e.to_string().contains(&format!("d.{ext}")), "{}", e);
        }
    }

    #[test]
    fn config_files_never_panic_and_errors_name_the_file(
        bytes in file_like(CONFIG.to_vec())
    ) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("metaprompt.toml");
        std::fs::write(&path, &bytes).expect("write");
        match metaprompt_llm::Config::load(&path) {
            Err(e) => prop_assert!(e.to_string().contains("metaprompt.toml"), "{}", e),
            // A config that loads resolves its model or says why.
            Ok(c) => {
                let _ = c.resolve("openai:gpt-4o", &|_| None);
            }
        }
    }
}

#[test]
fn the_valid_files_parse() {
    // The mutations start from valid files: check they are.
    let dir = task_dir();
    let path = dir.path().join("task.toml");
    std::fs::write(&path, read(&examples().join("task.toml"))).expect("write");
    Task::load(&path).expect("the example task loads");
    PromptFile::load(&examples().join("prompts/four_shot.toml")).expect("the prompt loads");
    let config = dir.path().join("metaprompt.toml");
    std::fs::write(&config, CONFIG).expect("write");
    let c = metaprompt_llm::Config::load(&config).expect("the config loads");
    let m = c
        .resolve("openai:gpt-4o", &|_| None)
        .expect("the model resolves");
    assert_eq!(m.context_tokens, Some(128_000));
}
