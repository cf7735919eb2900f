//! What a version's content is: its identity (the hash of its behaviour), the plain files it
//! exports to and imports from, and diffs between versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use metaprompt_eval::PromptFile;
use metaprompt_eval::prompt::MessageTemplate;
use metaprompt_eval::settings::{Reading, RunSettings};
use metaprompt_llm::{Message, Prompt, PromptFormat, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::RegistryError;

/// The version identity: sha256 (hex) of the parts that change what a model is sent or what a
/// rewrite must keep — instruction, templates, messages, demos, protected constraints, target
/// model, run settings. Name, description and rationale are metadata: two files that differ only there are
/// the same version.
pub fn hash(file: &PromptFile) -> String {
    // A prompt file is plain data (strings, numbers, maps keyed by strings), which always
    // serializes; were that ever to change, failing loudly beats every version sharing one hash.
    #[allow(clippy::expect_used)]
    let mut v = serde_json::to_value(file).expect("a prompt file serializes to JSON");
    if let Value::Object(m) = &mut v {
        for meta in ["name", "description", "rationale"] {
            m.remove(meta);
        }
    }
    let canonical = canonical(&v);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON with object keys sorted at every level, whatever serde_json's map order is.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The stored form of a version: the prompt file as TOML, named after its prompt. A file TOML
/// cannot hold (a null in a demonstration) is refused, never stored empty.
pub fn to_stored(prompt: &str, file: &PromptFile) -> Result<String, RegistryError> {
    let mut f = file.clone();
    f.name = prompt.into();
    f.to_toml().map_err(|e| RegistryError::Invalid {
        what: "prompt file",
        value: prompt.into(),
        expected: e.to_string(),
    })
}

pub(crate) fn parse_stored(text: &str) -> Result<PromptFile, RegistryError> {
    let f: PromptFile = toml::from_str(text)
        .map_err(|e| RegistryError::Data(format!("a stored version does not parse: {e}")))?;
    Ok(f)
}

/// The plain-file forms a version exports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// The prompt file (metaprompt's own format; `eval --prompt` reads it).
    Toml,
    /// One text with `{{ field }}` placeholders where the example goes (any template engine
    /// that knows `{{ }}` fills it; `prompts import` reads it back as a text template). A
    /// version for a chat model loses its roles here: its messages are joined.
    Text,
    /// With how the version runs: the body of an OpenAI request ([`RequestBody`]); without, a
    /// chat-messages JSON array (`[{"role": "system", "content": …}, …]`). Placeholders as in
    /// `Text`.
    Json,
}

impl Export {
    /// The format a path's extension asks for (`.toml`, `.json`, anything else is text).
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Export::Toml,
            Some("json") => Export::Json,
            _ => Export::Text,
        }
    }
}

/// The JSON export of a version that says how it runs: the body of an OpenAI chat request
/// (`messages`), or for a model that continues text, of a completions request (`prompt`),
/// with the parameters its evaluation used. What OpenAI's API has no field for (a choice's
/// labels, how the answer is read) goes under `metaprompt`. Import reads it back whole; a
/// field it does not know is an error, never dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metaprompt: Option<Extension>,
}

/// The `metaprompt` part of a [`RequestBody`]: what the version's `[run]` says beyond OpenAI's
/// parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Reading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_after: Option<String>,
}

/// OpenAI's `stop`: a string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stop {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Stop>::deserialize(d)? {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    })
}

impl RequestBody {
    /// The body for `file` in the form its model takes (`format`).
    fn of(file: &PromptFile, format: PromptFormat) -> Result<Self, RegistryError> {
        let (messages, prompt) = match (format, placeholder_render(file, format)?) {
            (PromptFormat::Text, Prompt::Text(t)) => (None, Some(t)),
            (_, Prompt::Text(t)) => (Some(vec![Message::user(t)]), None),
            (_, Prompt::Chat(m)) => (Some(m), None),
        };
        let run = file.run.as_ref();
        Ok(Self {
            model: file.target_model.clone(),
            messages,
            prompt,
            temperature: run.map(|r| r.temperature),
            max_tokens: run.map(|r| r.max_tokens),
            stop: run.map(|r| r.stop.clone()).unwrap_or_default(),
            metaprompt: run
                .filter(|r| r.labels.is_some() || r.answer.is_some() || r.answer_after.is_some())
                .map(|r| Extension {
                    labels: r.labels.clone(),
                    generate: r.generate,
                    answer: r.answer.clone(),
                    answer_after: r.answer_after.clone(),
                }),
        })
    }

    /// Back into a prompt file: the messages (a first system message is the instruction) or
    /// the text template, the model, and `[run]` when the body gives `max_tokens`.
    fn into_file(self, name: &str) -> Result<PromptFile, String> {
        let mut file = match (self.messages, self.prompt) {
            (Some(messages), None) => from_messages(messages),
            (None, Some(text)) => PromptFile::from_template(name, &text),
            (Some(_), Some(_)) => {
                return Err("a request body has `messages` or `prompt`, not both".into());
            }
            (None, None) => {
                return Err(
                    "a request body needs `messages` (a chat request) or `prompt` (a completions \
                     request)"
                        .into(),
                );
            }
        };
        file.target_model = self.model;
        let ext = self.metaprompt;
        file.run = match self.max_tokens {
            Some(max_tokens) => Some(RunSettings {
                temperature: self.temperature.unwrap_or(0.0),
                max_tokens,
                stop: self.stop,
                labels: ext.as_ref().and_then(|e| e.labels.clone()),
                generate: ext.as_ref().is_some_and(|e| e.generate),
                answer: ext.as_ref().and_then(|e| e.answer.clone()),
                answer_after: ext.and_then(|e| e.answer_after),
            }),
            None if self.temperature.is_some() || !self.stop.is_empty() || ext.is_some() => {
                return Err(
                    "the request body sets how the prompt runs but not `max_tokens`, which a \
                     version's [run] needs"
                        .into(),
                );
            }
            None => None,
        };
        Ok(file)
    }
}

/// Write a version's file in a plain form; `format` is the form its model takes prompts in
/// (a JSON export for a model that continues text is a completions request).
pub fn export(
    prompt: &str,
    file: &PromptFile,
    form: Export,
    format: PromptFormat,
) -> Result<String, RegistryError> {
    match form {
        Export::Toml => to_stored(prompt, file),
        Export::Text => match placeholder_render(file, PromptFormat::Text)? {
            Prompt::Text(t) => Ok(t),
            Prompt::Chat(m) => Ok(m
                .into_iter()
                .map(|m| m.content)
                .collect::<Vec<_>>()
                .join("\n")),
        },
        Export::Json => {
            let json = if file.run.is_some() || file.target_model.is_some() {
                serde_json::to_string_pretty(&RequestBody::of(file, format)?)
            } else {
                let messages = match placeholder_render(file, PromptFormat::Chat)? {
                    Prompt::Chat(m) => m,
                    Prompt::Text(t) => vec![Message::user(t)],
                };
                serde_json::to_string_pretty(&messages)
            };
            json.map_err(|e| RegistryError::Data(e.to_string()))
        }
    }
}

/// Render with every example variable replaced by its own `{{ name }}` placeholder.
fn placeholder_render(file: &PromptFile, format: PromptFormat) -> Result<Prompt, RegistryError> {
    let env = minijinja::Environment::new();
    let mut names = BTreeSet::new();
    let example_parts = file
        .instruction
        .iter()
        .chain(&file.template)
        .chain(file.messages.iter().map(|m| &m.content));
    for t in example_parts {
        let t = env
            .template_from_str(t)
            .map_err(|e| RegistryError::Data(format!("template error: {e}")))?;
        names.extend(t.undeclared_variables(false));
    }
    let vars: BTreeMap<String, Value> = names
        .iter()
        .map(|n| (n.clone(), Value::String(format!("{{{{ {n} }}}}"))))
        .collect();
    // In chat form a demonstration's answer is its one field the user message does not use.
    let file = file.longest();
    let output = file.demo_entries().first().and_then(|d| {
        let mut unused = d.keys().filter(|k| !names.contains(*k));
        match (unused.next(), unused.next()) {
            (Some(k), None) => Some(k.clone()),
            _ => None,
        }
    });
    file.render(&vars, format, output.as_deref())
        .map_err(|e| RegistryError::Data(e.to_string()))
}

/// Read a plain file back into a prompt file: `.toml` is a prompt file, `.json` a
/// [`RequestBody`] or a chat-messages array, anything else one text template. Errors name the
/// file (and line, where the parser gives one).
pub fn import(path: &Path, name: &str) -> Result<PromptFile, RegistryError> {
    let err = |message: String| RegistryError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if text.trim().is_empty() {
        return Err(err("the file is empty; expected a prompt".into()));
    }
    let mut file = match Export::for_path(path) {
        Export::Toml => toml::from_str::<PromptFile>(&text)
            .map_err(|e| err(format!("not a prompt file: {}", e.to_string().trim_end())))?,
        Export::Json => from_json(&text, name).map_err(err)?,
        Export::Text => PromptFile::from_template(name, &text),
    };
    if file.name.is_empty() || Export::for_path(path) != Export::Toml {
        file.name = name.into();
    }
    file.validate().map_err(err)?;
    Ok(file)
}

/// A JSON export: an object is a [`RequestBody`], an array chat messages.
fn from_json(text: &str, name: &str) -> Result<PromptFile, String> {
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('{') {
        let body: RequestBody = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a request body ({{\"model\", \"messages\" or \"prompt\", \"max_tokens\", …}}) \
                 nor a chat-messages JSON array: {e}"
            )
        })?;
        body.into_file(name)
    } else {
        let messages: Vec<Message> = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a chat-messages JSON array: {e} (expected [{{\"role\": \"user\", \"content\": \"…\"}}, …])"
            )
        })?;
        Ok(from_messages(messages))
    }
}

/// Chat messages as a prompt file: a first system message is the instruction.
fn from_messages(messages: Vec<Message>) -> PromptFile {
    let mut file = PromptFile::default();
    for (i, m) in messages.into_iter().enumerate() {
        if m.role == Role::System && i == 0 {
            file.instruction = Some(m.content);
        } else {
            file.messages.push(MessageTemplate {
                role: m.role,
                content: m.content,
            });
        }
    }
    file
}

/// A unified line diff of two versions' files (empty when they are the same).
pub fn diff(old_name: &str, old: &str, new_name: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_prompt() -> PromptFile {
        toml::from_str(
            r#"
name = "sst2"
description = "d"
instruction = "Classify the sentiment."
template = "Review: {{ text }}\nSentiment:"
demo_template = "Review: {{ text }}\nSentiment: {{ label }}\n\n"
demos = [{ text = "great", label = "positive" }]
constraints = ["Answer with one word."]
"#,
        )
        .unwrap()
    }

    /// A version's hash is its identity in every library already written: a change to what
    /// `hash` reads (a new `PromptFile` field that serializes when unset, a renamed one, another
    /// canonical form) would re-key every stored version. This pins it.
    #[test]
    fn the_hash_of_a_known_prompt_is_pinned() {
        assert_eq!(
            hash(&demo_prompt()),
            "3beeb1f4d1ef1407eb24a5813700d06d226b8f2371b94013a8cf270980ca904e"
        );
        let mut run = demo_prompt();
        run.target_model = Some("local:gemma-3-270m".into());
        assert_eq!(
            hash(&run),
            "175a15de747722e1136bab2788a372b98c2ddbf32bda7b6d9791849fca02b1dd"
        );
    }

    #[test]
    fn hash_ignores_metadata_but_not_behaviour() {
        let a = demo_prompt();
        let mut b = a.clone();
        b.name = "other".into();
        b.description = Some("other".into());
        b.rationale = Some("why".into());
        assert_eq!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
        let mut c = a.clone();
        c.instruction = Some("Classify the sentiment!".into());
        assert_ne!(hash(&a), hash(&c));
        let mut d = a.clone();
        d.constraints.clear();
        assert_ne!(hash(&a), hash(&d));
    }

    #[test]
    fn exports_work_outside_and_import_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = demo_prompt();
        let text = export("sst2", &p, Export::Text, PromptFormat::Chat).unwrap();
        assert_eq!(
            text,
            "Classify the sentiment.\n\nReview: great\nSentiment: positive\n\nReview: {{ text }}\nSentiment:"
        );
        let json = export("sst2", &p, Export::Json, PromptFormat::Chat).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["role"], "user");
        for (form, ext) in [
            (Export::Toml, "toml"),
            (Export::Text, "txt"),
            (Export::Json, "json"),
        ] {
            let path = dir.path().join(format!("p.{ext}"));
            std::fs::write(&path, export("sst2", &p, form, PromptFormat::Chat).unwrap()).unwrap();
            let back = import(&path, "sst2").unwrap();
            let vars = BTreeMap::from([("text".to_string(), Value::from("fine"))]);
            // A chat-messages export is for chat models: compare the chat form there.
            let f = if form == Export::Json {
                PromptFormat::Chat
            } else {
                PromptFormat::Text
            };
            let original = p.render(&vars, f, Some("label")).unwrap();
            let again = back.render(&vars, f, Some("label")).unwrap();
            assert_eq!(original, again, "{ext}");
            if form == Export::Toml {
                assert_eq!(
                    hash(&back),
                    hash(&p),
                    "TOML round-trips to the same version"
                );
            }
        }
    }

    #[test]
    fn a_json_export_carries_how_the_version_runs_and_imports_back_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = demo_prompt();
        p.target_model = Some("openai:gpt-4o-mini".into());
        p.run = Some(metaprompt_eval::settings::RunSettings {
            temperature: 0.0,
            max_tokens: 4,
            stop: vec!["\n".into()],
            labels: Some(vec!["negative".into(), "positive".into()]),
            generate: false,
            answer: None,
            answer_after: None,
        });
        let json = export("sst2", &p, Export::Json, PromptFormat::Chat).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["model"], "openai:gpt-4o-mini");
        assert_eq!(v["max_tokens"], 4);
        assert_eq!(v["stop"], serde_json::json!(["\n"]));
        assert_eq!(v["metaprompt"]["labels"][1], "positive");
        assert!(v["messages"].is_array());
        let path = dir.path().join("p.json");
        std::fs::write(&path, &json).unwrap();
        let back = import(&path, "sst2").unwrap();
        assert_eq!(back.run, p.run);
        assert_eq!(back.target_model, p.target_model);
        // Without settings or a model, the plain messages array, as before.
        let plain = export("sst2", &demo_prompt(), Export::Json, PromptFormat::Chat).unwrap();
        assert!(serde_json::from_str::<Value>(&plain).unwrap().is_array());
    }

    #[test]
    fn a_version_for_a_text_model_exports_a_completions_request_that_renders_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = demo_prompt();
        p.target_model = Some("local:gemma-3-270m".into());
        p.run = Some(RunSettings {
            temperature: 0.0,
            max_tokens: 8,
            stop: vec!["\n".into()],
            labels: None,
            generate: false,
            answer: Some(Reading::Normalized {}),
            answer_after: Some("Answer:".into()),
        });
        let json = export("sst2", &p, Export::Json, PromptFormat::Text).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert!(v.get("messages").is_none(), "{json}");
        assert!(
            v["prompt"]
                .as_str()
                .unwrap()
                .ends_with("Review: {{ text }}\nSentiment:")
        );
        assert_eq!(v["metaprompt"]["answer"]["read"], "normalized");
        let path = dir.path().join("p.json");
        std::fs::write(&path, &json).unwrap();
        let back = import(&path, "sst2").unwrap();
        assert_eq!(back.run, p.run);
        let vars = BTreeMap::from([("text".to_string(), Value::from("fine"))]);
        assert_eq!(
            back.render(&vars, PromptFormat::Text, Some("label"))
                .unwrap(),
            p.render(&vars, PromptFormat::Text, Some("label")).unwrap()
        );
    }

    #[test]
    fn a_request_body_import_refuses_what_it_would_lose() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        for (body, says) in [
            (
                r#"{"prompt": "x", "max_tokens": 4, "top_p": 0.5}"#,
                "unknown field `top_p`",
            ),
            (r#"{"prompt": "x", "messages": []}"#, "not both"),
            (r#"{"model": "m"}"#, "needs `messages`"),
            (r#"{"prompt": "x", "temperature": 0.5}"#, "not `max_tokens`"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}], "max_tokens": 4}"#,
                "robot",
            ),
        ] {
            std::fs::write(&path, body).unwrap();
            let e = import(&path, "p").unwrap_err().to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn chat_prompts_export_messages_with_demo_answers() {
        let p: PromptFile = toml::from_str(
            r#"
instruction = "Be brief."
messages = [{ role = "user", content = "Review: {{ text }}" }]
demos = [{ text = "great", label = "positive" }]
"#,
        )
        .unwrap();
        let v: Value =
            serde_json::from_str(&export("c", &p, Export::Json, PromptFormat::Chat).unwrap())
                .unwrap();
        let roles: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(v[2]["content"], "positive");
        assert_eq!(v[3]["content"], "Review: {{ text }}");
    }

    #[test]
    fn malformed_imports_name_the_file_and_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("a.toml", "template = \"x\"\nbogus = 1\n", "a.toml"),
            ("b.toml", "template = \"x\n", "line 1"),
            ("c.json", "{\"role\": \"user\"}", "chat-messages JSON array"),
            (
                "d.json",
                "[{\"role\": \"robot\", \"content\": \"x\"}]",
                "unknown variant `robot`, expected one of `system`, `user`, `assistant`",
            ),
            ("e.txt", "   \n", "empty"),
            ("f.txt", "Review: {{ text \n", "template error"),
            ("g.toml", "name = \"x\"\n", "needs a `template`"),
        ];
        for (name, text, expect) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let e = import(&path, "p").unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(expect), "{name}: {e}");
        }
        let e = import(&dir.path().join("missing.toml"), "p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.toml") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn diff_is_unified_and_empty_for_equal_texts() {
        let d = diff("v1", "a\nb\n", "v2", "a\nc\n");
        assert!(
            d.contains("--- v1") && d.contains("-b") && d.contains("+c"),
            "{d}"
        );
        assert!(diff("v1", "a\n", "v2", "a\n").is_empty());
    }
}
