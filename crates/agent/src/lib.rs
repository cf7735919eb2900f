//! The prompt-engineer agent of metaprompt (issue 16): it watches how every served prompt does
//! on live outcomes, finds the slice that got worse, writes down why, searches for a fix
//! through the engine, files it for review, canaries it on live traffic and promotes it or
//! rolls it back — each step recorded in the library.
//!
//! ```text
//! inference log + feedback ──monitor::report/detect──> Finding (BH across slices and prompts)
//!   ──agent::Agent::pass──> Case (a library row; one per slice, not re-reported)
//!       open      collect (failing + regression sets, held-out part) → diagnose (meta layer,
//!                 `diagnose` meta-prompt) → optimize (engine, seeded with the incumbent,
//!                 under the day's budget) → candidates above the incumbent on dev, best
//!                 first → guardrail → check per slice (paired) → file the first that passes
//!       proposed  the review queue; approve → canary, reject → kept for the meta layer
//!       canary    set_split(weight) → always-valid interval on live outcomes → promote
//!                 (move the label) or roll back (end the split)
//! ```
//!
//! - [`stats`] — [`stats::Rate`], the one-sided "worse than" test, Benjamini–Hochberg, and
//!   [`stats::sequential`], the canary's always-valid interval.
//! - [`monitor`] — slices, windows, findings, with the false-alarm level tested.
//! - [`collect`] — the failing and regression sets from the log, deduplicated, split
//!   stably into train, dev and the held-out check.
//! - [`case`] — the case's states and what it records.
//! - [`diagnose`] — the meta model's hypothesis checked against the meta-prompt's own worked
//!   example (a copy is dropped).
//! - `search` — a case's search recorded before it spends, so a stopped pass resumes it.
//! - [`progress`] — what a pass is doing, as it does it (stages, calls, time).
//! - [`agent`] — [`Agent::pass`]: one pass, idempotent over the library's state.
//!
//! Not here yet: discovered slices (clustering untagged failures).

pub mod agent;
pub mod case;
pub mod collect;
pub mod config;
pub mod diagnose;
pub mod monitor;
pub mod progress;
mod search;
pub mod stats;

pub use agent::{Agent, AgentError, PassReport, Settings, Status, status, status_of, status_since};
pub use case::{Case, State};
pub use progress::Progress;
