//! Tests of `task`.

use super::*;

fn write_task(dir: &Path, task: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/all.jsonl"),
        (0..10)
            .map(|i| format!("{{\"text\": \"t{i}\", \"label\": \"positive\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("prompt.toml"),
        "template = \"Review: {{ text }}\\nSentiment:\"\n",
    )
    .unwrap();
    let p = dir.join("task.toml");
    std::fs::write(&p, task).unwrap();
    p
}

const TASK: &str = r#"
name = "t"
description = "Sentiment."
inputs = ["text"]
output = "label"
prompt = "prompt.toml"
[data]
file = "data/all.jsonl"
split = { dev = 0.5, test = 0.5 }
seed = 1
[[metrics]]
type = "choice"
labels = ["negative", "positive"]
"#;

#[test]
fn loads_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::load(&write_task(dir.path(), TASK)).unwrap();
    assert_eq!(task.examples("dev").unwrap().len(), 5);
    assert_eq!(task.examples("test").unwrap().len(), 5);
    assert!(
        task.examples("train")
            .unwrap_err()
            .to_string()
            .contains("no split `train`")
    );
    assert_eq!(task.config.models.execution, "local:gemma-3-270m");
    assert_eq!(task.seed_prompt.name, "prompt");
}

#[test]
fn a_label_outside_the_choice_labels_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::load(&write_task(dir.path(), TASK)).unwrap();
    let data = dir.path().join("data/all.jsonl");
    let mut rows = std::fs::read_to_string(&data).unwrap();
    rows.push_str("{\"text\": \"t\", \"label\": \"Positive \"}\n");
    rows.push_str("{\"text\": \"t\", \"label\": \"neutral\"}\n");
    std::fs::write(&data, rows).unwrap();
    let e = task.examples("dev").unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}:12:", data.display()))
            && e.contains("\"neutral\"")
            && e.contains("negative, positive"),
        "{e}"
    );
}

#[test]
fn inline_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let inline = TASK.replace("prompt = \"prompt.toml\"\n", "")
        + "\n[prompt]\ntemplate = \"Review: {{ text }}\\nSentiment:\"\n";
    let task = Task::load(&write_task(dir.path(), &inline)).unwrap();
    assert_eq!(task.seed_prompt.name, "t-seed");
    assert_eq!(
        task.seed_prompt.template.as_deref(),
        Some("Review: {{ text }}\nSentiment:")
    );
    // A render error of the inline prompt names the task file.
    let vars = [("text".to_string(), serde_json::json!({"a": 1}))].into();
    let e = task
        .seed_prompt
        .render(&vars, metaprompt_llm::PromptFormat::Text, None)
        .map(|_| ())
        .and_then(|()| {
            let mut p = task.seed_prompt.clone();
            p.template = Some("{{ text.nosuch }}".into());
            p.render(&vars, metaprompt_llm::PromptFormat::Text, None)
        })
        .unwrap_err()
        .to_string();
    let file = dir.path().join("task.toml").display().to_string();
    assert!(
        e.starts_with(&format!("{file}: prompt `t-seed`, `template`"))
            && e.contains("undefined attribute `nosuch` of `text`"),
        "{e}"
    );
    let typo = inline.replace("[prompt]\ntemplate", "[prompt]\ntemplat");
    let e = Task::load(&write_task(dir.path(), &typo))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `templat`") && e.contains("line 15"),
        "{e}"
    );
}

#[test]
fn strict_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = Task::load(&write_task(
        dir.path(),
        &TASK.replace("seed = 1", "seed = 1\nshuffle = true"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("task.toml") && e.contains("line 11") && e.contains("shuffle"),
        "{e}"
    );
    let e = Task::load(&write_task(
        dir.path(),
        &TASK.replace("type = \"choice\"", "type = \"chioce\""),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("chioce") && e.contains("line 12"), "{e}");
    let e = Task::load(&write_task(
        dir.path(),
        &TASK.replace("split = { dev = 0.5, test = 0.5 }\n", ""),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs `split` ratios"), "{e}");
    let e = Task::load(&write_task(
        dir.path(),
        &TASK.replace("prompt.toml", "missing.toml"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing.toml: cannot read"), "{e}");
    let e = Task::load(&write_task(
        dir.path(),
        &TASK.replace("inputs = [\"text\"]", "inputs = []"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least one input"), "{e}");
}

#[test]
fn metric_errors_name_the_file_the_line_and_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let load = |task: &str| {
        Task::load(&write_task(dir.path(), task))
            .unwrap_err()
            .to_string()
    };
    // Line 14 is the header of a second table, line 15 its `type`.
    let two = format!("{TASK}[[metrics]]\ntype = \"equals\"\n");
    let e = load(&format!("{two}labels = [\"a\", \"b\"]\n"));
    assert!(
            e.contains("task.toml")
                && e.contains("line 15")
                && e.contains("unknown field `labels` for metric type `equals`, expected one of `normalize`, `weight`, `threshold` (`labels` belongs to `choice`)"),
            "{e}"
        );
    let e = load(&TASK.replace("labels", "wieght = 2\nlabels"));
    assert!(
        e.contains("line 13") && e.contains("unknown field `wieght` for metric type `choice`"),
        "{e}"
    );
    let e = load(&format!("{two}weight = 2\nvalue = \"x\"\n"));
    assert!(
        e.contains("line 17") && e.contains("unknown field `value`"),
        "{e}"
    );
    let e = load(&format!("{TASK}[[metrics]]\ntype = \"regex\"\n"));
    assert!(
        e.contains("line 14") && e.contains("metric `regex`: missing field `value`"),
        "{e}"
    );
    let e = load(&TASK.replace("type = \"choice\"\n", ""));
    assert!(
        e.contains("line 11") && e.contains("missing field `type`"),
        "{e}"
    );
}

#[test]
fn settings_that_cannot_be_meant_are_errors_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let load = |task: &str| {
        Task::load(&write_task(dir.path(), task))
            .unwrap_err()
            .to_string()
    };
    let split = "split = { dev = 0.5, test = 0.5 }";
    for (bad, line, says) in [
        (
            "split = { dev = 0.7, test = 0.6 }",
            9,
            "split ratios sum to 1.2999999999999998 (dev = 0.7, test = 0.6), more than the whole file",
        ),
        ("split = { dev = 1.5 }", 9, "split ratio `dev` = 1.5"),
        (
            "split = { dev = -0.5, test = 0.5 }",
            9,
            "split ratio `dev` = -0.5",
        ),
        (
            "split = { dev = nan, test = 0.5 }",
            9,
            "split ratio `dev` = NaN",
        ),
    ] {
        let e = load(&TASK.replace(split, bad));
        assert!(
            e.contains("task.toml") && e.contains(&format!("line {line}")) && e.contains(says),
            "{bad}: {e}"
        );
    }
    let models = |table: &str| format!("{TASK}[models]\n{table}\n");
    for (bad, says) in [
        (
            "execution_temperature = nan",
            "a temperature must be a finite number >= 0, got NaN",
        ),
        (
            "meta_temperature = inf",
            "a temperature must be a finite number >= 0, got inf",
        ),
        (
            "execution_temperature = -1",
            "a temperature must be a finite number >= 0, got -1",
        ),
        ("max_tokens = 0", "`max_tokens` must be at least 1, got 0"),
    ] {
        let e = load(&models(bad));
        assert!(e.contains("line 15") && e.contains(says), "{bad}: {e}");
    }
    for bad in ["max_cost_usd = -1", "max_meta_cost_usd = nan"] {
        let e = load(&format!("{TASK}[budget]\n{bad}\n"));
        assert!(
            e.contains("line 15") && e.contains("a dollar cap must be a finite number, 0 or more"),
            "{bad}: {e}"
        );
    }
    let e = load(&TASK.replace("labels = [", "threshold = 1.5\nlabels = ["));
    assert!(
        e.contains("line 13") && e.contains("`threshold` must be a score between 0 and 1, got 1.5"),
        "{e}"
    );
    // What can be meant still loads: shares summing to less than 1 (the rest unused), a
    // zero share, float rounding at 1.
    for ok in [
        "split = { dev = 0.3, test = 0.2 }",
        "split = { dev = 0.5, test = 0.5, train = 0 }",
        "split = { train = 0.2, dev = 0.4, test = 0.4 }",
    ] {
        let task = Task::load(&write_task(dir.path(), &TASK.replace(split, ok)))
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        if ok.contains("0.3") {
            assert_eq!(task.examples("dev").unwrap().len(), 3);
            assert_eq!(task.examples("test").unwrap().len(), 2);
        }
    }
}

#[test]
fn the_example_tasks_load() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path().join("task.toml");
        if path.exists() {
            let task = Task::load(&path).unwrap_or_else(|e| panic!("{e}"));
            for metric in &task.config.metrics {
                if metric.kind() != MetricKind::LlmRubric {
                    crate::metric::build(metric, None)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
            }
            loaded += 1;
        }
    }
    assert!(loaded > 0, "no task.toml under {}", examples.display());
}
