//! The owned, serializable requests. A request is everything a job needs besides the engine
//! (config, hub, cache, library): the CLI builds one from flags, the server from a JSON body, a
//! worker reads one from a queue, and an optimization's checkpoint stores its own to resume.
//!
//! Paths are taken as given and made absolute when the job starts, so a stored request means
//! the same files from any working directory.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn dev() -> String {
    "dev".into()
}

/// Which examples of a task, on which model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// The task file.
    pub task: PathBuf,
    /// The execution model [default: the task's `models.execution`].
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "dev")]
    pub split: String,
    /// The first N examples of the split only.
    #[serde(default)]
    pub limit: Option<usize>,
    /// With `limit`: a seeded random sample of N instead of the first N.
    #[serde(default)]
    pub sample_seed: Option<u64>,
}

impl Scope {
    pub fn new(task: impl Into<PathBuf>) -> Self {
        Self {
            task: task.into(),
            model: None,
            split: dev(),
            limit: None,
            sample_seed: None,
        }
    }
}

/// Score one prompt on a task's examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    pub scope: Scope,
    /// A prompt file [default: the task's seed prompt].
    #[serde(default)]
    pub prompt: Option<PathBuf>,
    /// Where the per-example JSONL goes [default: `<task dir>/results/<prompt>.<split>.jsonl`].
    #[serde(default)]
    pub out: Option<PathBuf>,
}

/// Score two prompts on the same examples and test the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    pub scope: Scope,
    pub a: PathBuf,
    pub b: PathBuf,
}

/// The meta layer's settings, shared by generate, translate and optimize.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaOptions {
    /// The meta model [default: the task's `models.meta`].
    #[serde(default)]
    pub meta: Option<String>,
    /// The system message of the chat-form meta-prompts (the text itself) [default: the task's
    /// `models.meta_system`, else the template's].
    #[serde(default)]
    pub meta_system: Option<String>,
    /// A directory of meta-prompt files replacing the built-in ones.
    #[serde(default)]
    pub templates: Option<PathBuf>,
    /// The guardrail's judge [default: the meta model when it is instruction-tuned].
    #[serde(default)]
    pub judge: Option<String>,
    /// Protected constraints added to the task's and the prompt's.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Seed of the meta model's sampling and of every random choice.
    #[serde(default)]
    pub seed: u64,
}

/// Write a prompt from a task description (and, with a task, check and score it on data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// What the prompt must do [default: the task's description].
    #[serde(default)]
    pub description: Option<String>,
    /// A task file: data, metrics, constraints, models.
    #[serde(default)]
    pub task: Option<PathBuf>,
    /// Candidates the meta model writes.
    #[serde(default = "four")]
    pub candidates: u32,
    /// Demonstrations from the train split put in the prompt.
    #[serde(default = "four_usize")]
    pub demos: usize,
    /// The execution model [default: the task's, else the embedded model].
    #[serde(default)]
    pub model: Option<String>,
    /// The name of the result [default: `<task>-generated`].
    #[serde(default)]
    pub name: Option<String>,
    /// Skip scoring the candidates on data.
    #[serde(default)]
    pub no_eval: bool,
    #[serde(default)]
    pub once: OnceOptions,
    #[serde(default)]
    pub meta: MetaOptions,
}

fn three() -> u32 {
    3
}
fn four() -> u32 {
    4
}
fn four_usize() -> usize {
    4
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            description: None,
            task: None,
            candidates: 4,
            demos: 4,
            model: None,
            name: None,
            no_eval: false,
            once: OnceOptions::default(),
            meta: MetaOptions::default(),
        }
    }
}

/// Settings of the single-pass meta commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnceOptions {
    /// The meta model's temperature [default: the task's `models.meta_temperature`].
    #[serde(default)]
    pub meta_temperature: Option<f32>,
    /// Where the prompt file goes [default: `<task dir>/results/<name>.toml`].
    #[serde(default)]
    pub out: Option<PathBuf>,
    #[serde(default = "dev")]
    pub split: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

impl Default for OnceOptions {
    fn default() -> Self {
        Self {
            meta_temperature: None,
            out: None,
            split: dev(),
            limit: None,
        }
    }
}

/// Rewrite a prompt for another model and measure parity on data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    pub task: PathBuf,
    pub prompt: PathBuf,
    /// The target model.
    pub to: String,
    /// The model the prompt was written for [default: its `target_model`, else the task's].
    #[serde(default)]
    pub from: Option<String>,
    /// Rewrites to sample besides the mechanical layout conversion.
    #[serde(default = "three")]
    pub variants: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub once: OnceOptions,
    #[serde(default)]
    pub meta: MetaOptions,
}

/// Hard caps of an optimization; each unset one falls back to the task's `[budget]`, then the
/// defaults (1500 metric calls, 40 meta calls, no dollar or time cap).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    #[serde(default)]
    pub max_metric_calls: Option<u64>,
    #[serde(default)]
    pub max_meta_calls: Option<u64>,
    /// Cap on the tokens the meta layer generates; when set and no call cap is, it replaces
    /// the default call cap (the unit for a local meta model).
    #[serde(default)]
    pub max_meta_tokens: Option<u64>,
    #[serde(default)]
    pub max_meta_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    #[serde(default)]
    pub max_wall_secs: Option<u64>,
}

/// Improve a task's prompt in a budgeted loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    pub task: PathBuf,
    /// `auto`, `fewshot`, `opro`, `ape`, `protegi`, `gepa` or `evolve`.
    #[serde(default = "auto")]
    pub algorithm: String,
    /// Start from this prompt file instead of the task's seed prompt.
    #[serde(default)]
    pub prompt: Option<PathBuf>,
    /// The prompt's name in the library [default: the task's name].
    #[serde(default)]
    pub name: Option<String>,
    /// The execution model [default: the task's].
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub meta: MetaOptions,
    #[serde(default)]
    pub budget: BudgetRequest,
    /// Use only the first N dev examples.
    #[serde(default)]
    pub dev_limit: Option<usize>,
    /// Use only the first N test examples (0: no test evaluation).
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// The share of the dev examples (the last ones) held out of the search: the best candidate
    /// is chosen on the rest and must beat the seed on these alone to be kept, so the verdict
    /// is not flattered by the choice (the winner's curse) [default: none held out].
    #[serde(default)]
    pub hold_out: Option<f64>,
    /// The share of a round's (candidate, example) pairs that may stay unscored before the run
    /// stops [default: 0.05].
    #[serde(default)]
    pub max_unscored: Option<f64>,
    /// The most tokens a candidate prompt may spend on itself (instruction, demonstrations,
    /// the template's words); a longer one is rejected before it is scored. None: no cap.
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    #[serde(default = "six")]
    pub rounds: usize,
    #[serde(default = "two")]
    pub patience: usize,
    #[serde(default = "four")]
    pub per_round: u32,
    #[serde(default = "twenty")]
    pub minibatch: usize,
    #[serde(default = "four_usize")]
    pub demos: usize,
    #[serde(default = "explore")]
    pub explore: f32,
    #[serde(default = "exploit")]
    pub exploit: f32,
    /// Rank sampled instructions by the execution model's likelihood of the expected outputs
    /// and race only the most likely (`ape`, `mipro`) [default: false].
    #[serde(default)]
    pub proxy: bool,
    /// Do not try the worked-answer form (short working lines before the answer, written by
    /// the meta model; `auto`, round 2) [default: false, it is tried].
    #[serde(default)]
    pub no_worked: bool,
    /// Where the run keeps its checkpoint and reports [default: `<task dir>/runs/<task>-<algo>-<time>`].
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// Store the kept prompt in the library [default: true]. The agent turns it off: it files
    /// a proposal itself, only after its own checks on every slice pass.
    #[serde(default = "yes")]
    pub store: bool,
}

fn yes() -> bool {
    true
}

fn auto() -> String {
    "auto".into()
}
fn six() -> usize {
    6
}
fn two() -> usize {
    2
}
fn twenty() -> usize {
    20
}
fn explore() -> f32 {
    0.9
}
fn exploit() -> f32 {
    0.2
}

impl OptimizeRequest {
    /// The defaults for `task`.
    pub fn new(task: impl Into<PathBuf>) -> Self {
        Self {
            task: task.into(),
            algorithm: auto(),
            prompt: None,
            name: None,
            model: None,
            meta: MetaOptions::default(),
            budget: BudgetRequest::default(),
            dev_limit: None,
            test_limit: None,
            hold_out: None,
            max_unscored: None,
            max_prompt_tokens: None,
            rounds: six(),
            patience: two(),
            per_round: four(),
            minibatch: twenty(),
            demos: four_usize(),
            explore: explore(),
            exploit: exploit(),
            proxy: false,
            no_worked: false,
            run_dir: None,
            store: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_rejects_unknown_fields() {
        let mut r = OptimizeRequest::new("examples/sst2/task.toml");
        r.algorithm = "opro".into();
        r.budget.max_cost_usd = Some(2.5);
        r.meta.constraints = vec!["Answer in English.".into()];
        let json = serde_json::to_value(&r).unwrap_or_default();
        let back: OptimizeRequest = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        let minimal: OptimizeRequest =
            serde_json::from_str(r#"{"task": "t.toml"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(minimal, OptimizeRequest::new("t.toml"));
        let e = serde_json::from_str::<OptimizeRequest>(r#"{"task": "t.toml", "rouns": 3}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `rouns`"), "{e}");
        let e = serde_json::from_str::<EvalRequest>(r#"{"scope": {"task": "t", "limt": 3}}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `limt`"), "{e}");
    }
}
