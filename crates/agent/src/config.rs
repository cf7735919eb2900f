//! The `[agent]` table of `metaprompt.toml`, typed here by its owner: what the agent watches,
//! what it may spend, how it ships, with per-prompt tables under `[agent.prompts.NAME]`. Read
//! from the file's text with [`AgentConfig::read`] (`metaprompt_llm::Config::section`), so a
//! wrong key or value is an error naming the file, line and column; [`crate::Settings`] checks
//! the ranges serde cannot say.

use std::collections::BTreeMap;
use std::path::PathBuf;

use metaprompt_llm::{Config, LlmError};
use serde::{Deserialize, Serialize};

/// The `[agent]` table: the prompt-engineer agent's policy. Every field has a default; a prompt
/// may override some under `[agent.prompts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The meta model that diagnoses failures and writes proposals. Default: the model the
    /// prompt's inferences ran on, so the application's inputs never reach a model the prompt
    /// does not already use. Naming another model here sends them there.
    pub meta: Option<String>,
    /// The monitor's window in seconds (the baseline is the window before it). Default: 3600.
    pub window_secs: Option<u64>,
    /// Fewest scored outcomes on each side of a test. Default: 30.
    pub min_n: Option<u64>,
    /// False-discovery rate across every test of a pass. Default: 0.05.
    pub fdr: Option<f64>,
    /// Smallest drop in mean score worth a finding. Default: 0.05.
    pub min_drop: Option<f64>,
    /// Model calls (meta and execution) the agent may make per UTC day, all prompts together.
    /// Default: 5000.
    pub max_calls_per_day: Option<u64>,
    /// Dollars the agent may spend per UTC day, all prompts together. Default: no cap.
    pub max_usd_per_day: Option<f64>,
    /// The share of the label's traffic (percent) a canary gets. Default: 10.
    pub canary_weight: Option<u32>,
    /// Scored outcomes each side of a canary needs before it may be promoted. Default: 30.
    pub canary_min_n: Option<u64>,
    /// How much worse (in mean score) a canary may be and still be promoted. Default: 0.05.
    pub canary_margin: Option<f64>,
    /// Per prompt.
    #[serde(default)]
    pub prompts: BTreeMap<String, AgentPromptConfig>,
}

/// `[agent.prompts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPromptConfig {
    /// Who ships a proposal. Default: `review`.
    pub policy: Option<ShipPolicy>,
    /// `false`: the agent only reports on this prompt. Default: true.
    pub act: Option<bool>,
    /// A task file for this prompt: its metric scores proposals, its dev split joins the
    /// regression set. Default: the live outcomes only, scored by exact match.
    pub task: Option<PathBuf>,
    /// The optimizer a proposal is searched with (checked by the engine like `optimize
    /// --algorithm`). Default: `fewshot` for classifications (the failing set's corrected
    /// examples become demonstrations), else `protegi`.
    pub algorithm: Option<String>,
    /// Model calls this prompt's proposals may make per UTC day. Default: 1000.
    pub max_calls_per_day: Option<u64>,
    /// Output tokens of the execution model when a proposal is scored. Default: 16.
    pub max_tokens: Option<u32>,
    /// Stop sequences of the execution model when a proposal is scored.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// `policy` of `[agent.prompts.NAME]`: who ships a proposal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShipPolicy {
    /// A person approves every proposal before its canary.
    #[default]
    Review,
    /// Canaried without approval; refused (left for review) for a prompt with protected
    /// constraints.
    AutoDeploy,
}

impl AgentConfig {
    /// The `[agent]` table of `config`'s file (its defaults when there is none).
    pub fn read(config: &Config) -> Result<Self, LlmError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            agent: AgentConfig,
        }
        Ok(config.section::<File>()?.agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_table_is_read_from_the_file_and_a_wrong_policy_names_its_line() {
        let config =
            Config::parse("[agent]\nfdr = 0.1\n[agent.prompts.news]\npolicy = \"auto-deploy\"\n")
                .unwrap();
        let c = AgentConfig::read(&config).unwrap();
        assert_eq!(c.fdr, Some(0.1));
        assert_eq!(c.prompts["news"].policy, Some(ShipPolicy::AutoDeploy));
        let e = AgentConfig::read(
            &Config::parse("[agent]\n\n[agent.prompts.news]\npolicy = \"yolo\"\n").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4") && e.contains("`auto-deploy`"), "{e}");
    }
}
