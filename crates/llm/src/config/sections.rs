//! The sections of `metaprompt.toml` that other crates read: `[server]` (with its webhooks) and
//! `[agent]` (with its per-prompt tables).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on. Default: `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Largest request body, in bytes. Default: 1 MiB.
    pub max_body_bytes: Option<u64>,
    /// Longest a request may take, in seconds (a model call included). Default: 300.
    pub request_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's headers, counted from the connection's
    /// accept for its first request and from the first byte for a later one; a connection
    /// that takes longer is closed. 1 to 3600. Default: 30.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request before it is closed
    /// (never while a request or a response stream is in progress). 1 to 86400. Default: 75.
    pub idle_timeout_secs: Option<u64>,
    /// Connections served at once. Beyond it, one more is accepted and waits for a slot and
    /// the rest wait in the kernel's listen backlog, while the connections with nothing in
    /// progress are closed to make room. Keep it well under the process's open-file limit
    /// (`ulimit -n`): each gateway request also holds a connection to its provider. 1 to
    /// 1000000. Default: 512.
    pub max_connections: Option<u64>,
    /// Inferences (and their feedback) older than this many days are removed. Default: kept.
    pub retention_days: Option<u32>,
    /// How durable the inference log's commits are before a request is answered: `full` (each
    /// fsynced: survives power loss) or `normal` (written, not fsynced: survives `kill -9` of
    /// the server, not a crash of the machine). Default: `full`.
    pub log_sync: Option<String>,
    /// Output tokens of a run when the request does not say. Default: 256.
    pub max_tokens: Option<u32>,
    /// Where runs started over HTTP keep their records and run directories. Default: `runs/`
    /// beside the library file.
    pub runs_dir: Option<PathBuf>,
    /// URLs told about proposals, review decisions, label and split moves, finished runs.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Folders of task folders (`<root>/<name>/task.toml`) that runs started over HTTP may name
    /// by `<name>`. Default: none (runs cannot be started over HTTP).
    #[serde(default)]
    pub task_roots: Vec<PathBuf>,
    /// Host names the server answers to besides IP addresses and `localhost` (`"*"`: any).
    /// Requests with another `Host` are refused (DNS rebinding). Default: none.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Let HTTP callers name embedded models by file (`local:/path/model.gguf`), not only the
    /// catalog's names. Default: false.
    pub allow_model_paths: Option<bool>,
}

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
    /// `review` (a person approves every proposal; the default) or `auto-deploy` (canaried
    /// without approval; refused for a prompt with protected constraints).
    pub policy: Option<String>,
    /// `false`: the agent only reports on this prompt. Default: true.
    pub act: Option<bool>,
    /// A task file for this prompt: its metric scores proposals, its dev split joins the
    /// regression set. Default: the live outcomes only, scored by exact match.
    pub task: Option<PathBuf>,
    /// The optimizer a proposal is searched with. Default: `fewshot` for classifications (the
    /// failing set's corrected examples become demonstrations), else `protegi`.
    pub algorithm: Option<String>,
    /// Model calls this prompt's proposals may make per UTC day. Default: 1000.
    pub max_calls_per_day: Option<u64>,
    /// Output tokens of the execution model when a proposal is scored. Default: 16.
    pub max_tokens: Option<u32>,
    /// Stop sequences of the execution model when a proposal is scored.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// One `[[server.webhooks]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the HMAC secret (secrets stay out of config files).
    pub secret_env: String,
    /// Which events (`version.proposed`, `review.decided`, `label.moved`, `split.changed`,
    /// `run.finished`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}
