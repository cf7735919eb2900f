//! The meta layer of metaprompt: an LLM call that writes, rewrites and checks the prompt that
//! another LLM call runs.
//!
//! - [`meta`] — meta-prompts as Jinja template files (`templates/*.toml`, user-overridable),
//!   each with a chat form for instruction-tuned meta models and a completion form for base
//!   models such as the embedded Gemma.
//! - [`brief`] — what the meta layer is told about a task, and the data-given frame of a prompt
//!   (example layout, demonstrations) that an instruction is assembled into.
//! - [`proxy`] — the likelihood proxy: the execution model's log-probability of the expected
//!   outputs after a candidate, to rank many candidates cheaply before a few are raced.
//! - [`guard`] — the protected-constraint guardrail: lexical check, then an LLM judge.
//! - [`clean`] — the wrapping a meta model puts around an instruction (`Here's the new
//!   instruction:`, `**…**`, `<instruction>…</instruction>`, quotes), stripped when it is read.
//! - [`junk`] — the screen that rejects meta answers which are not instructions (empty, number
//!   lists, markup, code, copies of an example, repetition, the meta-prompt's framing alone,
//!   talk about an instruction, a bare phrase, unrelated text) before they cost evaluation.
//! - [`candidate`] — candidates and their fate, evaluation, per-layer cost accounting.
//! - [`generate`](mod@generate) — a prompt from a task description (analyse, write N, check, evaluate, pick).
//! - [`translate`](mod@translate) — a prompt moved to another model, with parity measured on data.
//! - [`run`] — what every optimizer shares: problem, budget, pool with per-example scores
//!   (failed calls left unscored, never zeros), racing, temperature schedule, rounds,
//!   convergence, cancellation, checkpoints (through a `RunStore`), the verdict vs the seed;
//!   `run::run` takes a `Runner` (what it borrows) and its future is `Send`.
//! - [`algo`] — the optimizers, one file each behind the `Optimizer` trait (`fewshot`, `opro`,
//!   `ape`, `protegi`, `gepa`, `evolve`, `mipro`, `auto`); [`report`] — the HTML report of a run.
//!
//! The data path stays one-directional: task → brief → meta-prompt → meta model → answer →
//! candidate (frame + instruction) → junk screen → guardrail → evaluator → choice. The meta model and the
//! execution model are separate providers, each counted on its own meter ([`candidate::Layers`]).

pub mod algo;
pub mod brief;
pub mod candidate;
pub mod chart;
pub mod clean;
pub mod generate;
pub mod guard;
pub mod junk;
pub mod meta;
pub mod proxy;
pub mod report;
pub mod run;
pub mod translate;
pub mod worked;

pub use brief::{Brief, Frame};
pub use candidate::{Candidate, Costs, Evaluation, Layers, Status};
pub use generate::{GenerateSpec, Generated, generate};
pub use guard::{Guard, GuardReport};
pub use meta::{MetaError, MetaPrompts};
pub use translate::{TranslateSpec, Translated, translate};

use metaprompt_eval::Summary;

/// Progress of a meta-layer run, for a console or a log.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step begins.
    Step(&'a str),
    /// The meta model's analysis of the task.
    Analysis(&'a str),
    /// A candidate was written and checked (not yet evaluated).
    Candidate(&'a Candidate),
    /// Evaluation of the prompt `label` is at `done` of `total` examples.
    Evaluating {
        label: &'a str,
        done: usize,
        total: usize,
    },
    /// Evaluation of the prompt `label` finished.
    Evaluated {
        label: &'a str,
        summary: &'a Summary,
    },
    /// An optimization round finished.
    Round(&'a run::RoundStats),
}

/// Receives [`Event`]s.
pub type Observer<'a> = &'a (dyn Fn(Event<'_>) + Sync);
