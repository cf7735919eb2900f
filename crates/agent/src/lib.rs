//! The prompt-engineer agent of metaprompt (issue 16), built in steps. What is here is its
//! first step, the part every later step stands on: **monitor and detect** over the service's
//! inference and feedback log.
//!
//! ```text
//! inference log + feedback ──Outcome::from_records──> outcomes
//!   ──monitor::report (per prompt, per tag slice; current window beside the one before)──>
//!   SliceReport ──monitor::detect (one-sided tests, Benjamini–Hochberg at fdr, min_n,
//!   min_drop)──> Finding
//! ```
//!
//! - [`stats`] — [`stats::Rate`] (mean score with an adjusted interval), the one-sided test of
//!   "worse than" ([`stats::p_worse`]) and [`stats::benjamini_hochberg`].
//! - [`monitor`] — slices, windows, findings; the false-alarm level is tested on simulated
//!   stationary traffic.
//!
//! Not here yet (the rest of issue 16): discovered slices for untagged failures, collecting the
//! failing and regression sets, the diagnosis, proposals through the engine, canaries with a
//! sequential test, `metaprompt agent`, and findings stored in the library.

pub mod monitor;
pub mod stats;
