//! Every task shipped in `examples/` loads, every split has rows whose expected outputs the
//! task's metrics accept, and every prompt of the task renders its first dev example in both
//! forms. A human-written prompt (`prompts/human.toml`, the baseline of BENCHMARKS' small-model
//! table) has an instruction and exactly the demonstrations of the prompt it says it shares them
//! with, so the table compares instructions and nothing else; its chat form
//! (`prompts/human_chat.toml`) adds a sentence on the answer format and nothing else.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use metaprompt_eval::PromptFile;
use metaprompt_eval::task::Task;
use metaprompt_llm::PromptFormat;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn tasks() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ is readable")
        .map(|e| e.unwrap().path().join("task.toml"))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_task_loads_and_every_prompt_renders() {
    let tasks = tasks();
    assert!(
        tasks.len() >= 14,
        "expected the shipped tasks, found {tasks:?}"
    );
    for path in tasks {
        let task = Task::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let output = task.config.output.clone();
        let mut first = None;
        for split in ["train", "dev", "test"] {
            let rows = task
                .examples(split)
                .unwrap_or_else(|e| panic!("{} {split}: {e}", path.display()));
            assert!(
                rows.len() >= 20,
                "{} {split}: {} rows",
                path.display(),
                rows.len()
            );
            assert!(
                rows.iter().all(|e| e.expected.is_some()),
                "{} {split}",
                path.display()
            );
            if split == "dev" {
                first = Some(rows[0].clone());
            }
        }
        let first = first.unwrap();
        let prompts = task.dir().join("prompts");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&prompts)
            .unwrap_or_else(|e| panic!("{}: {e}", prompts.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no prompts", prompts.display());
        for file in &files {
            let prompt =
                PromptFile::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for format in [PromptFormat::Text, PromptFormat::Chat] {
                prompt
                    .render(&first.vars, format, Some(&output))
                    .unwrap_or_else(|e| panic!("{} ({format:?}): {e}", file.display()));
            }
        }
        let human = prompts.join("human.toml");
        if human.is_file() {
            let h = PromptFile::load(&human).unwrap();
            assert!(
                h.instruction
                    .as_deref()
                    .is_some_and(|i| !i.trim().is_empty()),
                "{}: no instruction",
                human.display()
            );
            let description = h.description.clone().unwrap_or_default();
            let (_, rest) = description
                .split_once("same demonstrations as ")
                .unwrap_or_else(|| panic!("{}: names no seed prompt", human.display()));
            let seed_file = rest.trim_end_matches('.');
            let seed = PromptFile::load(&prompts.join(seed_file))
                .unwrap_or_else(|e| panic!("{}: its seed {seed_file}: {e}", human.display()));
            assert!(
                !seed.demos.is_empty(),
                "{}: seed without demos",
                human.display()
            );
            assert_eq!(h.demos, seed.demos, "{} vs {seed_file}", human.display());
            assert_eq!(
                h.template,
                seed.template,
                "{} vs {seed_file}",
                human.display()
            );
            assert_eq!(h.demo_template, seed.demo_template, "{}", human.display());
            // The careful person's chat prompt: the same instruction (and a sentence on the
            // answer format), the same demonstrations, the example as the user turn.
            let chat = PromptFile::load(&prompts.join("human_chat.toml"))
                .unwrap_or_else(|e| panic!("{}: human_chat.toml: {e}", prompts.display()));
            let said = h.instruction.as_deref().unwrap_or_default();
            assert!(
                chat.instruction
                    .as_deref()
                    .is_some_and(|i| i.starts_with(said) && i.len() > said.len()),
                "{}: human_chat.toml does not extend human.toml's instruction",
                prompts.display()
            );
            assert_eq!(chat.demos, h.demos, "{}", prompts.display());
            assert!(
                chat.template.is_none() && chat.messages.len() == 1,
                "{}: one user message",
                prompts.display()
            );
        }
    }
}
