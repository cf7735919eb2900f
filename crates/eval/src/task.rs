//! Task files (TOML, strict: an unknown key is an error with file, line and column).
//!
//! ```toml
//! name = "sst2"
//! description = "Classify the sentiment of a movie review as positive or negative."
//! inputs = ["sentence"]
//! output = "label"
//! prompt = "prompts/four_shot.toml"      # the seed prompt, relative to this file
//! constraints = ["Answer with one word."]
//!
//! [data]
//! train = "data/train.jsonl"             # explicit files per split, or:
//! dev = "data/dev.jsonl"                 #   file = "data/all.jsonl"
//! test = "data/test.jsonl"               #   split = { train = 0.6, dev = 0.2, test = 0.2 }
//! seed = 13
//! fields = { sentence = "text" }         # template variable = column (optional)
//!
//! [[metrics]]
//! type = "choice"
//! labels = ["negative", "positive"]
//!
//! [models]
//! execution = "local:gemma-3-270m"
//! meta = "local:gemma-3-270m"
//!
//! [budget]
//! max_metric_calls = 2000
//! ```
//!
//! Values are checked as they are read, with the file and line: split ratios are shares in
//! [0, 1] summing to at most 1 (never rescaled), temperatures finite and not negative,
//! `max_tokens` at least 1, dollar caps finite and not negative.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::{self, Example, Mapping};
use crate::metric::{MetricConfig, MetricKind};
use crate::prompt::PromptFile;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    /// The task in plain words (what the meta layer reads).
    pub description: String,
    /// Input variables every example has.
    pub inputs: Vec<String>,
    /// The variable holding the expected output.
    pub output: String,
    /// The seed prompt: a prompt file (relative to the task file) or an inline `[prompt]` table.
    pub prompt: PromptSource,
    /// Sentences every generated or rewritten prompt must keep.
    #[serde(default)]
    pub constraints: Vec<String>,
    pub data: DataConfig,
    pub metrics: Vec<MetricConfig>,
    #[serde(default)]
    pub models: ModelsConfig,
    #[serde(default)]
    pub budget: BudgetConfig,
}

/// Where the seed prompt is: `prompt = "prompts/seed.toml"` or an inline `[prompt]` table with
/// the fields of a prompt file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PromptSource {
    File(PathBuf),
    Inline(Box<PromptFile>),
}

impl<'de> Deserialize<'de> for PromptSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // By hand rather than `untagged`, so a typo inside an inline prompt keeps its precise
        // error (and line) instead of "did not match any variant".
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PromptSource;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a prompt file path or an inline prompt table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PromptSource, E> {
                Ok(PromptSource::File(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PromptSource, A::Error> {
                let p = PromptFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PromptSource::Inline(Box::new(p)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub train: Option<PathBuf>,
    pub dev: Option<PathBuf>,
    pub test: Option<PathBuf>,
    /// One file split by `split` ratios after a seeded shuffle.
    pub file: Option<PathBuf>,
    /// The share of `file` each split takes: each in [0, 1], summing to at most 1.
    #[serde(default, deserialize_with = "split_ratios")]
    pub split: Option<BTreeMap<String, f64>>,
    /// Seed of the split (and of sampling).
    #[serde(default)]
    pub seed: u64,
    /// Template variable = column, for columns named differently.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// The model that runs the prompt.
    #[serde(default = "default_model")]
    pub execution: String,
    /// The model that writes prompts (and judges, by default). Default: Qwen2.5-Coder 1.5B
    /// Instruct, the embedded model that writes instructions a person would accept (the base
    /// Gemma writes "Take a group photo."; BENCHMARKS.md, "Which embedded model writes").
    #[serde(default = "default_meta_model")]
    pub meta: String,
    #[serde(default, deserialize_with = "temperature")]
    pub execution_temperature: f32,
    #[serde(default = "default_meta_temperature", deserialize_with = "temperature")]
    pub meta_temperature: f32,
    /// Replaces the system message of the chat-form meta-prompts (the meta model's persona).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_system: Option<String>,
    /// Most tokens the execution model generates per example.
    #[serde(default = "default_max_tokens", deserialize_with = "max_tokens")]
    pub max_tokens: u32,
    /// Stop sequences for generation (for example the start of the next demonstration).
    #[serde(default)]
    pub stop: Vec<String>,
    /// The model works its answer out first and gives it after this marker (`"Answer:"`): the
    /// metrics score the text after the marker's last occurrence, never the working (see
    /// [`crate::settings::answer_part`]); a choice is then generated and read, not scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_after: Option<String>,
}

fn default_model() -> String {
    "local:gemma-3-270m".into()
}
fn default_meta_model() -> String {
    "local:qwen2.5-coder-1.5b-instruct".into()
}
fn default_meta_temperature() -> f32 {
    0.8
}
fn default_max_tokens() -> u32 {
    64
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            execution: default_model(),
            meta: default_meta_model(),
            execution_temperature: 0.0,
            meta_temperature: default_meta_temperature(),
            meta_system: None,
            max_tokens: default_max_tokens(),
            stop: Vec::new(),
            answer_after: None,
        }
    }
}

/// Hard caps for optimizers (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub max_metric_calls: Option<u64>,
    pub max_meta_calls: Option<u64>,
    pub max_meta_tokens: Option<u64>,
    #[serde(default, deserialize_with = "dollars")]
    pub max_meta_cost_usd: Option<f64>,
    #[serde(default, deserialize_with = "dollars")]
    pub max_cost_usd: Option<f64>,
    pub max_wall_secs: Option<u64>,
}

// Range checks as the values are read, so the error has the line (the toml error names it).

fn temperature<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let t = f32::deserialize(d)?;
    match metaprompt_llm::types::temperature_problem(t) {
        Some(p) => Err(serde::de::Error::custom(format!("a temperature {p}"))),
        None => Ok(t),
    }
}

fn max_tokens<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    match metaprompt_llm::types::max_tokens_problem(n) {
        Some(p) => Err(serde::de::Error::custom(format!("`max_tokens` {p}"))),
        None => Ok(n),
    }
}

fn dollars<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let usd = f64::deserialize(d)?;
    match dollars_problem(usd) {
        Some(p) => Err(serde::de::Error::custom(p)),
        None => Ok(Some(usd)),
    }
}

fn split_ratios<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, f64>>, D::Error> {
    let ratios = BTreeMap::<String, f64>::deserialize(d)?;
    match ratios_problem(&ratios) {
        Some(p) => Err(serde::de::Error::custom(p)),
        None => Ok(Some(ratios)),
    }
}

/// Why `usd` cannot be a dollar cap, if it cannot.
fn dollars_problem(usd: f64) -> Option<String> {
    (!(usd.is_finite() && usd >= 0.0))
        .then(|| format!("a dollar cap must be a finite number, 0 or more, got {usd}"))
}

/// Why split ratios cannot be meant, if they cannot: each is the share of `file` its split
/// takes, so each is in [0, 1] and together they are at most the whole file.
fn ratios_problem(ratios: &BTreeMap<String, f64>) -> Option<String> {
    if let Some((name, r)) = ratios
        .iter()
        .find(|(_, r)| !(r.is_finite() && (0.0..=1.0).contains(*r)))
    {
        return Some(format!(
            "split ratio `{name}` = {r}: a ratio is the share of `file` a split takes, between 0 and 1"
        ));
    }
    let total: f64 = ratios.values().sum();
    (total > 1.0 + dataset::RATIO_EPSILON).then(|| {
        let parts: Vec<String> = ratios.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!(
            "split ratios sum to {total} ({}), more than the whole file: they must sum to at most 1",
            parts.join(", ")
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    #[error(transparent)]
    Prompt(#[from] crate::prompt::PromptError),
    /// A row's expected output is not one of the `choice` metric's labels (it could never score).
    #[error("{id}: expected label {label:?} is not among the `choice` labels: {}", labels.join(", "))]
    Label {
        /// `file:line` (or `file#index`) of the row.
        id: String,
        label: String,
        labels: Vec<String>,
    },
}

/// A loaded task: its config, where it lives, and its seed prompt.
#[derive(Debug, Clone)]
pub struct Task {
    pub config: TaskConfig,
    pub path: PathBuf,
    pub seed_prompt: PromptFile,
}

impl Task {
    pub fn load(path: &Path) -> Result<Task, TaskError> {
        let err = |message: String| TaskError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let config: TaskConfig =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        if !crate::name::is_valid(&config.name) {
            return Err(err(format!(
                "name = {:?}: a task name is a library name and a folder name: {}",
                config.name,
                crate::name::EXPECTED
            )));
        }
        check(&config).map_err(err)?;
        let task = Task {
            seed_prompt: PromptFile::default(),
            path: path.to_path_buf(),
            config,
        };
        let seed_prompt = match &task.config.prompt {
            PromptSource::File(file) => PromptFile::load(&task.resolve(file))?,
            PromptSource::Inline(p) => {
                let mut p = (**p).clone();
                if p.name.is_empty() {
                    p.name = format!("{}-seed", task.config.name);
                }
                p.validate().map_err(err)?;
                // Render errors name the file the template is in: the task file.
                p.source = crate::prompt::SourcePath(Some(path.to_path_buf()));
                p
            }
        };
        Ok(Task {
            seed_prompt,
            ..task
        })
    }

    /// A path from the task file, relative to the task file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn mapping(&self) -> Mapping {
        Mapping {
            fields: self.config.data.fields.clone(),
            inputs: self.config.inputs.clone(),
            output: Some(self.config.output.clone()),
        }
    }

    /// The examples of a split (`train`, `dev`, `test`, or any name in `split` ratios). With a
    /// `choice` metric, every expected output must be one of its labels.
    pub fn examples(&self, split: &str) -> Result<Vec<Example>, TaskError> {
        self.load_examples(split)
    }

    /// A dataset file's rows, labels checked (before any split, so every row is checked).
    fn load_file(&self, file: &Path) -> Result<Vec<Example>, TaskError> {
        let examples = dataset::load(&self.resolve(file), &self.mapping())?;
        self.check_labels(&examples)?;
        Ok(examples)
    }

    /// An expected output outside the `choice` labels is an error naming the row (compared as
    /// the metric compares: trimmed, ASCII case-insensitive).
    fn check_labels(&self, examples: &[Example]) -> Result<(), TaskError> {
        let Some(labels) = self.config.metrics.iter().find_map(|m| m.labels()) else {
            return Ok(());
        };
        for ex in examples {
            let Some(expected) = &ex.expected else {
                continue;
            };
            for label in dataset::accepted(expected) {
                if !labels
                    .iter()
                    .any(|l| l.trim().eq_ignore_ascii_case(label.trim()))
                {
                    return Err(TaskError::Label {
                        id: ex.id.clone(),
                        label,
                        labels: labels.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }

    fn load_examples(&self, split: &str) -> Result<Vec<Example>, TaskError> {
        let data = &self.config.data;
        let err = |message: String| TaskError::File {
            path: self.path.clone(),
            message,
        };
        let explicit = match split {
            "train" => data.train.as_ref(),
            "dev" => data.dev.as_ref(),
            "test" => data.test.as_ref(),
            _ => None,
        };
        if let Some(file) = explicit {
            return self.load_file(file);
        }
        match (&data.file, &data.split) {
            (Some(file), Some(ratios)) => {
                if !ratios.contains_key(split) {
                    return Err(err(format!(
                        "no split `{split}` (splits: {})",
                        ratios.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                let all = self.load_file(file)?;
                let ratios: Vec<(String, f64)> =
                    ratios.iter().map(|(k, v)| (k.clone(), *v)).collect();
                Ok(dataset::split(all, &ratios, data.seed)
                    .remove(split)
                    .unwrap_or_default())
            }
            _ => Err(err(format!(
                "no data for split `{split}`: set [data] {split} = \"file\", or file + split ratios"
            ))),
        }
    }
}

fn check(c: &TaskConfig) -> Result<(), String> {
    if c.inputs.is_empty() {
        return Err("`inputs` must name at least one input variable".into());
    }
    if c.metrics.is_empty() {
        return Err("at least one [[metrics]] table is needed".into());
    }
    let d = &c.data;
    let explicit = d.train.is_some() || d.dev.is_some() || d.test.is_some();
    match (&d.file, &d.split) {
        (Some(_), None) => {
            return Err(
                "[data] `file` needs `split` ratios, e.g. split = { dev = 0.5, test = 0.5 }".into(),
            );
        }
        (None, Some(_)) => return Err("[data] `split` ratios need a `file` to split".into()),
        (Some(_), Some(ratios)) => {
            if explicit {
                return Err("[data]: use either explicit train/dev/test files or `file` + `split`, not both".into());
            }
            if let Some(p) = ratios_problem(ratios) {
                return Err(format!("[data] {p}"));
            }
        }
        (None, None) if !explicit => {
            return Err("[data] needs train/dev/test files, or `file` + `split`".into());
        }
        _ => {}
    }
    // What the deserializers check, for a config built in code.
    let m = &c.models;
    for (key, t) in [
        ("execution_temperature", m.execution_temperature),
        ("meta_temperature", m.meta_temperature),
    ] {
        if let Some(p) = metaprompt_llm::types::temperature_problem(t) {
            return Err(format!("[models] {key} {p}"));
        }
    }
    if let Some(p) = metaprompt_llm::types::max_tokens_problem(m.max_tokens) {
        return Err(format!("[models] max_tokens {p}"));
    }
    if let Some(p) = m
        .answer_after
        .as_deref()
        .and_then(crate::settings::marker_problem)
    {
        return Err(format!("[models] answer_after {p}"));
    }
    for (key, usd) in [
        ("max_meta_cost_usd", c.budget.max_meta_cost_usd),
        ("max_cost_usd", c.budget.max_cost_usd),
    ] {
        if let Some(p) = usd.and_then(dollars_problem) {
            return Err(format!("[budget] {key}: {p}"));
        }
    }
    for (i, metric) in c.metrics.iter().enumerate() {
        if let Err(e) = metric.check_values() {
            return Err(format!("[[metrics]] #{}: {e}", i + 1));
        }
    }
    let choices = c
        .metrics
        .iter()
        .filter(|m| m.kind() == MetricKind::Choice)
        .count();
    if choices > 1 {
        return Err("at most one `choice` metric per task".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
