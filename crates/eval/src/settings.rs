//! How a prompt runs: the execution settings it was evaluated with, kept in the prompt file
//! itself (its `[run]` table), so that what a server answers with a version is what the
//! evaluation measured, not the server's defaults.
//!
//! ```toml
//! [run]
//! temperature = 0.0
//! max_tokens = 4
//! stop = ["\n"]
//! labels = ["positive", "negative"]   # a choice: answered by label scoring where the model
//!                                     # can score (as the evaluation did), else generated and
//!                                     # read as the choice metric reads it (`answer`)
//! # generate = true                   # always generate and read (the metric's `generate`)
//! ```
//!
//! The model is the prompt's `target_model`. `optimize`, `generate`, `translate` and the agent
//! record the task's settings in what they keep; a version without `[run]` (older ones) runs
//! with the server's defaults, and the server says so.

use serde::{Deserialize, Serialize};

use crate::Task;
use crate::metric::MetricSpec;

/// The execution settings a prompt was evaluated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    #[serde(default)]
    pub temperature: f32,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The answer is one of these labels, chosen by log-probability where the model can score
    /// labels (as the evaluation chose it); elsewhere generated, and the label read from the
    /// text as the `choice` metric reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Generate and read the label even where the model could score (the task's `choice`
    /// metric says `generate = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
}

impl RunSettings {
    /// The settings a task evaluates with: its `[models]` temperature, `max_tokens` and `stop`,
    /// and the labels of its `choice` metric unless that metric generates.
    pub fn of_task(task: &Task) -> Self {
        let m = &task.config.models;
        let choice = task.config.metrics.iter().find_map(|c| match &c.spec {
            MetricSpec::Choice(o) => Some(o),
            _ => None,
        });
        Self {
            temperature: m.execution_temperature,
            max_tokens: m.max_tokens,
            stop: m.stop.clone(),
            labels: choice.map(|o| o.labels.clone()),
            generate: choice.is_some_and(|o| o.generate),
        }
    }

    /// Why these settings cannot be used, if they cannot (checked when a prompt file is read).
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = metaprompt_llm::types::temperature_problem(self.temperature) {
            return Some(format!("[run] temperature {p}"));
        }
        if let Some(p) = metaprompt_llm::types::max_tokens_problem(self.max_tokens) {
            return Some(format!("[run] max_tokens {p}"));
        }
        if self.labels.as_ref().is_some_and(|l| l.len() < 2) {
            return Some("[run] labels: a choice needs at least two labels".into());
        }
        None
    }
}
