//! What is optimized ([`Problem`]) and how a run proceeds ([`Settings`], the temperature
//! [`Schedule`]).

use metaprompt_eval::{EvalOptions, Example, PromptFile, Scorer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::brief::{Brief, Frame};

/// What is optimized, and on what data.
#[derive(Debug)]
pub struct Problem {
    pub brief: Brief,
    pub seed_prompt: PromptFile,
    /// The seed prompt's layout, in both forms.
    pub frame: Frame,
    pub constraints: Vec<String>,
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    /// Dev examples held out of the search: the verdict tests the best candidate against the
    /// seed on these alone, so the comparison is not biased by having chosen the best on the
    /// same examples (the winner's curse). Empty: the verdict tests on `dev`.
    pub confirm: Vec<Example>,
    pub test: Vec<Example>,
    pub scorer: Scorer,
    pub options: EvalOptions,
}

/// Meta temperature by round: exploration early, exploitation late (linear).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Schedule {
    pub explore: f32,
    pub exploit: f32,
}

impl Default for Schedule {
    /// The seed guidance: 0.7–1.0 early, 0–0.3 late.
    fn default() -> Self {
        Self {
            explore: 0.9,
            exploit: 0.2,
        }
    }
}

impl Schedule {
    pub fn at(&self, round: usize, rounds: usize) -> f32 {
        if rounds <= 1 {
            return self.explore;
        }
        let t = (round.saturating_sub(1)) as f32 / (rounds - 1) as f32;
        self.explore + (self.exploit - self.explore) * t.min(1.0)
    }
}

/// How a run proceeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub seed: u64,
    pub rounds: usize,
    /// Rounds without significant improvement before stopping.
    pub patience: usize,
    pub schedule: Schedule,
    /// Candidates proposed per round (where the algorithm samples several).
    pub per_round: u32,
    /// First rung of racing (dev examples); doubles each rung.
    pub minibatch: usize,
    /// Demonstrations in a prompt (few-shot search).
    pub demos: usize,
    /// The largest fraction of a round's (candidate, example) pairs that may go unscored (the
    /// call or the metric failed, and failed again on the retry) before the run stops with
    /// `RunError::Unscored` rather than decide on what is left.
    #[serde(default = "default_max_unscored")]
    pub max_unscored: f64,
    /// Rank sampled instructions by the likelihood proxy ([`crate::proxy`]) and race only the
    /// most likely (`ape`, `mipro`; twice as many are sampled). Off by default: on the embedded
    /// models its rank correlation with the metric was near zero (BENCHMARKS.md).
    #[serde(default)]
    pub proxy: bool,
    /// The most tokens a candidate may spend on itself (instruction, demonstrations, the
    /// template's words; estimated as the context check does): a longer one is rejected before
    /// it is scored. `None`: no cap.
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    /// Try the worked-answer form of the best prompt (`auto`, round 2; [`crate::worked`]).
    #[serde(default = "yes")]
    pub worked: bool,
    /// What the caller needs to rebuild the same problem on resume (models, data limits, extra
    /// constraints…); opaque to the run, kept in the checkpoint.
    #[serde(default)]
    pub invocation: Value,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed: 0,
            rounds: 6,
            patience: 2,
            schedule: Schedule::default(),
            per_round: 4,
            minibatch: 20,
            demos: 4,
            max_unscored: default_max_unscored(),
            proxy: false,
            max_prompt_tokens: None,
            worked: true,
            invocation: Value::Null,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_max_unscored() -> f64 {
    0.05
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_schedule_explores_first_and_exploits_last() {
        let s = Schedule {
            explore: 1.0,
            exploit: 0.2,
        };
        assert_eq!(s.at(1, 5), 1.0);
        assert!((s.at(3, 5) - 0.6).abs() < 1e-6);
        assert!((s.at(5, 5) - 0.2).abs() < 1e-6);
        // Past the last round (a resumed run with more rounds) it stays at the exploit end.
        assert!((s.at(9, 5) - 0.2).abs() < 1e-6);
        // Round 0 (the seed) and a one-round run explore.
        assert_eq!(s.at(0, 5), 1.0);
        assert_eq!(s.at(1, 1), 1.0);
    }

    #[test]
    fn settings_saved_before_max_unscored_existed_still_load() {
        let mut old = serde_json::to_value(Settings {
            max_unscored: 0.5,
            ..Settings::default()
        })
        .unwrap();
        assert!(
            old.as_object_mut()
                .unwrap()
                .remove("max_unscored")
                .is_some()
        );
        let s: Settings = serde_json::from_value(old).unwrap();
        assert_eq!(s.max_unscored, 0.05);
    }
}
