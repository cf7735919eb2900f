//! What never leaves the server in an error: secret values and quoted file contents.
//!
//! Every JSON error the server answers, and every error it stores in a run record, goes through
//! [`Secrets::public`]:
//! - **secrets by value**: the values of every environment variable the config names as a key
//!   (`api_key_env` of each provider, the built-in providers' key variables), every webhook's
//!   `secret_env`, and every variable whose name says it holds a credential (`*KEY*`,
//!   `*SECRET*`, `*TOKEN*`, `*PASSWORD*`, …), whatever the value's shape; then credential-shaped
//!   strings (`Bearer …`, `sk-…`, `mp_…` tokens) by [`metaprompt_llm::Redactor`];
//! - **file contents**: the lines a parser quotes from a file (TOML's `12 | key = …` excerpts)
//!   are dropped, so an error names the file, line and problem but never shows the text.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use metaprompt_llm::{Config, Redactor};

use crate::{AppState, WebhookConfig};

/// Error bodies longer than this are not rewritten (none of the server's own are).
const MAX_ERROR_BODY: usize = 1 << 20;

/// Words in a variable's name that mark its value as a credential.
const SECRET_NAME_WORDS: [&str; 8] = [
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
];

/// Values shorter than this are not masked by value (they would mask ordinary words).
const MIN_SECRET_LEN: usize = 6;

/// The server's redactor: built once at start from the config and the environment.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    redactor: Redactor,
}

impl Secrets {
    /// Every secret the config names and every credential-named variable of `env`.
    pub fn from_env(
        config: &Config,
        webhooks: &[WebhookConfig],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut named: Vec<String> = config
            .providers
            .values()
            .filter_map(|p| p.api_key_env.clone())
            .collect();
        named.extend(["OPENAI_API_KEY".into(), "ANTHROPIC_API_KEY".into()]);
        named.extend(webhooks.iter().map(|w| w.secret_env.clone()));
        let values = env.into_iter().filter_map(|(k, v)| {
            let upper = k.to_ascii_uppercase();
            let secret = named.contains(&k) || SECRET_NAME_WORDS.iter().any(|w| upper.contains(w));
            (secret && v.trim().len() >= MIN_SECRET_LEN).then_some(v)
        });
        Self {
            redactor: Redactor::new(values),
        }
    }

    /// `text` as a client may see it: quoted file lines dropped, secrets masked.
    pub fn public(&self, text: &str) -> String {
        self.redactor.redact(&strip_quoted(text))
    }

    /// Every string in `value` (keys too) as a client may see it ([`Secrets::public`]): for
    /// records that carry error text from deep inside (a run's result, webhook deliveries,
    /// the agent's cases).
    pub fn public_json(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.public(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.public_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.public(&k), self.public_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// Pass every JSON error answer through [`Secrets::public`], whichever handler wrote it.
pub async fn scrub(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(response.status().is_client_error() || response.status().is_server_error()) || !json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let text = String::from_utf8_lossy(&bytes);
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    if let Some(message) = value
        .pointer_mut("/error/message")
        .and_then(|m| m.as_str().map(|s| state.secrets.public(s)))
    {
        value["error"]["message"] = serde_json::Value::String(message);
    }
    let out = value.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// `text` without the lines a parser quotes from a file: TOML's excerpt (`  |`, `12 | …`,
/// `  |     ^`). The error's own lines (what, where) stay.
pub fn strip_quoted(text: &str) -> String {
    if !text.contains('|') {
        return text.to_string();
    }
    text.lines()
        .filter(|line| !is_excerpt(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_excerpt(line: &str) -> bool {
    let t = line.trim_start();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let rest = t[digits..].trim_start();
    rest.starts_with('|')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_by_value_whatever_their_shape_and_quoted_lines_are_dropped() {
        let config = Config::parse(
            "[providers.corp]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
             api_key_env = \"CORP_LLM\"\n\
             [[server.webhooks]]\nurl = \"http://127.0.0.1:2/\"\nsecret_env = \"HOOK\"\n",
        )
        .unwrap();
        let hooks = crate::ServerConfig::read(&config).unwrap().webhooks;
        let env = [
            ("CORP_LLM", "zz9-plural-z-alpha"),
            ("HOOK", "whsec-42-lunch"),
            ("DATABASE_PASSWORD", "hunter22"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("HOME", "/root"),
            ("SHORT_KEY", "abc"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = Secrets::from_env(&config, &hooks, env);
        let text = "CORP_LLM=zz9-plural-z-alpha\0HOOK=whsec-42-lunch\0DATABASE_PASSWORD=hunter22\0\
                    AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\0HOME=/root\0token mp_0123456789abcdef";
        let out = s.public(text);
        for secret in [
            "zz9-plural",
            "whsec-42",
            "hunter22",
            "wJalrXUtn",
            "mp_0123456789",
        ] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("HOME=/root"), "{out}");
        let nested = serde_json::json!({"error": {"message": "key zz9-plural-z-alpha"},
                                         "items": ["hunter22", 3]});
        let out = s.public_json(nested).to_string();
        assert!(
            !out.contains("zz9-plural") && !out.contains("hunter22"),
            "{out}"
        );
        let toml = "TOML parse error at line 1, column 6\n  |\n1 | OPENAI=sk-live\n  |      ^\n\
                    invalid key\n";
        let out = strip_quoted(toml);
        assert_eq!(out, "TOML parse error at line 1, column 6\ninvalid key");
    }
}
