//! Evaluation, the ground truth every optimizer stands on: task files, datasets, prompt
//! templates, metrics, the evaluator and its statistics.
//!
//! The data path, one direction only:
//!
//! ```text
//! task.toml ─┬─> dataset ──> examples (train / dev / test)
//!            └─> prompt template ──render──> request ──> provider ──> output
//! output + example ──> metric ──> score (+ feedback) ──> evaluator (mean, bootstrap CI, paired tests)
//! ```
//!
//! - [`task`] — strict TOML task files; [`dataset`] — JSONL / CSV / JSON with line-numbered
//!   errors; [`prompt`] — minijinja templates rendering to chat or text.
//! - [`metric`] — one `Metric` per kind, promptfoo names where the meaning is the same.
//! - [`evaluator`] — batches examples through a provider (label scoring when the task is a
//!   classification and the model can score), per-example JSONL, summary; [`stats`] — bootstrap
//!   intervals, paired bootstrap, McNemar.

pub mod dataset;
pub mod evaluator;
pub mod metric;
pub mod name;
pub mod prompt;
pub mod select;
pub mod settings;
pub mod stats;
pub mod task;

#[cfg(test)]
mod fuzz_tests;

pub use dataset::Example;
pub use evaluator::{EvalOptions, Report, Scorer, Summary, evaluate};
pub use prompt::PromptFile;
pub use task::Task;
