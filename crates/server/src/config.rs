//! The `[server]` table of `metaprompt.toml`, typed here by its owner: where the server listens,
//! its limits, how long it keeps inferences, its webhooks. Read from the file's text with
//! [`ServerConfig::read`] (`metaprompt_llm::Config::section`), so a wrong key or value is an
//! error naming the file, line and column; [`crate::ServerOptions::from_config`] checks the
//! ranges serde cannot say.

use std::path::PathBuf;

use metaprompt_llm::{Config, LlmError};
use metaprompt_registry::service::LogSync;
use serde::{Deserialize, Serialize};

use crate::webhooks::WebhookEvent;

/// `[server]`.
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
    pub log_sync: Option<LogSync>,
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

/// One `[[server.webhooks]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the HMAC secret (secrets stay out of config files).
    pub secret_env: String,
    /// Which events; empty: all.
    #[serde(default)]
    pub events: Vec<WebhookEvent>,
}

impl ServerConfig {
    /// The `[server]` table of `config`'s file (its defaults when there is none).
    pub fn read(config: &Config) -> Result<Self, LlmError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            server: ServerConfig,
        }
        Ok(config.section::<File>()?.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_table_is_read_from_the_file_with_its_line_and_the_rest_ignored() {
        let config = Config::parse(
            "[cache]\nenabled = false\n\n[server]\nlog_sync = \"normal\"\n\
             [[server.webhooks]]\nurl = \"http://127.0.0.1:9/\"\nsecret_env = \"H\"\n\
             events = [\"run.finished\"]\n",
        )
        .unwrap();
        let c = ServerConfig::read(&config).unwrap();
        assert_eq!(c.log_sync, Some(LogSync::Normal));
        assert_eq!(c.webhooks[0].events, [WebhookEvent::RunFinished]);
        assert!(
            ServerConfig::read(&Config::default())
                .unwrap()
                .webhooks
                .is_empty()
        );
        for (text, line, words) in [
            (
                "[server]\nlog_sync = \"sometimes\"\n",
                2,
                "`full` or `normal`",
            ),
            ("[server]\nlisten_on = \"x\"\n", 2, "listen_on"),
            (
                "[server]\n[[server.webhooks]]\nurl = \"u\"\nsecret_env = \"H\"\nevents = [\"run.done\"]\n",
                5,
                "run.finished",
            ),
        ] {
            let e = ServerConfig::read(&Config::parse(text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("line {line}")), "{text}: {e}");
            assert!(e.contains(words), "{text}: {e}");
            assert!(e.contains("metaprompt.toml"), "{e}");
        }
    }
}
