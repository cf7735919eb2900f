//! What a version's content is: its identity (the hash of its behaviour), the plain files it
//! exports to and imports from, and diffs between versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use metaprompt_eval::PromptFile;
use metaprompt_eval::prompt::MessageTemplate;
use metaprompt_llm::{Message, Prompt, PromptFormat, Role};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::RegistryError;

/// The version identity: sha256 (hex) of the parts that change what a model is sent or what a
/// rewrite must keep — instruction, templates, messages, demos, protected constraints, target
/// model, run settings. Name, description and rationale are metadata: two files that differ only there are
/// the same version.
pub fn hash(file: &PromptFile) -> String {
    let mut v = serde_json::to_value(file).unwrap_or(Value::Null);
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

/// The stored form of a version: the prompt file as TOML, named after its prompt.
pub fn to_stored(prompt: &str, file: &PromptFile) -> String {
    let mut f = file.clone();
    f.name = prompt.into();
    f.to_toml()
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
    /// that knows `{{ }}` fills it; `prompts import` reads it back as a text template).
    Text,
    /// A chat-messages JSON array (`[{"role": "system", "content": …}, …]`) with
    /// `{{ field }}` placeholders.
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

/// Write a version's file in a plain form.
pub fn export(prompt: &str, file: &PromptFile, form: Export) -> Result<String, RegistryError> {
    match form {
        Export::Toml => Ok(to_stored(prompt, file)),
        Export::Text => match placeholder_render(file, PromptFormat::Text)? {
            Prompt::Text(t) => Ok(t),
            Prompt::Chat(m) => Ok(m
                .into_iter()
                .map(|m| m.content)
                .collect::<Vec<_>>()
                .join("\n")),
        },
        Export::Json => {
            let messages = match placeholder_render(file, PromptFormat::Chat)? {
                Prompt::Chat(m) => m,
                Prompt::Text(t) => vec![Message::user(t)],
            };
            let json: Vec<Value> = messages
                .iter()
                .map(|m| serde_json::json!({"role": role_name(m.role), "content": m.content}))
                .collect();
            // With how it runs, the body of an OpenAI chat request (model, messages and the
            // evaluated parameters; a choice's labels under `metaprompt`); without, the array.
            let body = if file.run.is_some() || file.target_model.is_some() {
                let mut body = serde_json::Map::new();
                if let Some(m) = &file.target_model {
                    body.insert("model".into(), Value::from(m.as_str()));
                }
                body.insert("messages".into(), Value::Array(json));
                if let Some(r) = &file.run {
                    body.insert("temperature".into(), Value::from(r.temperature));
                    body.insert("max_tokens".into(), Value::from(r.max_tokens));
                    if !r.stop.is_empty() {
                        body.insert("stop".into(), Value::from(r.stop.clone()));
                    }
                    if let Some(labels) = &r.labels {
                        let mut m = serde_json::json!({ "labels": labels });
                        if r.generate {
                            m["generate"] = Value::Bool(true);
                        }
                        body.insert("metaprompt".into(), m);
                    }
                }
                Value::Object(body)
            } else {
                Value::Array(json)
            };
            serde_json::to_string_pretty(&body).map_err(|e| RegistryError::Data(e.to_string()))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
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

/// Read a plain file back into a prompt file: `.toml` is a prompt file, `.json` a chat-messages
/// array, anything else one text template. Errors name the file (and line, where the parser
/// gives one).
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
        Export::Json => from_messages(&text).map_err(err)?,
        Export::Text => PromptFile::from_template(name, &text),
    };
    if file.name.is_empty() || Export::for_path(path) != Export::Toml {
        file.name = name.into();
    }
    file.validate().map_err(err)?;
    Ok(file)
}

fn from_messages(text: &str) -> Result<PromptFile, String> {
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
        format!("not a chat-messages JSON array: {e} (expected [{{\"role\": \"user\", \"content\": \"…\"}}, …])")
    })?;
    let mut file = PromptFile::default();
    // The request-body form: messages with the parameters the version ran with.
    let messages = match value {
        Value::Array(m) => m,
        Value::Object(mut body) => {
            let messages = match body.remove("messages") {
                Some(Value::Array(m)) => m,
                _ => {
                    return Err(
                        "not a chat-messages JSON array, nor a request body with a `messages` \
                         array"
                            .into(),
                    );
                }
            };
            file.target_model = body.get("model").and_then(Value::as_str).map(String::from);
            if let Some(max_tokens) = body.get("max_tokens").and_then(Value::as_u64) {
                let generate = body
                    .get("metaprompt")
                    .and_then(|m| m.get("generate"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let labels = body
                    .get("metaprompt")
                    .and_then(|m| m.get("labels"))
                    .map(|l| serde_json::from_value::<Vec<String>>(l.clone()))
                    .transpose()
                    .map_err(|e| format!("metaprompt.labels: {e}"))?;
                file.run = Some(metaprompt_eval::settings::RunSettings {
                    temperature: body
                        .get("temperature")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0) as f32,
                    max_tokens: u32::try_from(max_tokens)
                        .map_err(|_| format!("max_tokens {max_tokens} is too large"))?,
                    stop: match body.get("stop") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::String(s)) => vec![s.clone()],
                        Some(v) => {
                            serde_json::from_value(v.clone()).map_err(|e| format!("stop: {e}"))?
                        }
                    },
                    labels,
                    generate,
                });
            }
            messages
        }
        _ => {
            return Err(
                "expected a chat-messages JSON array or a request body with `messages`".into(),
            );
        }
    };
    for (i, m) in messages.iter().enumerate() {
        let field = |k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("message {}: needs a string `{k}`", i + 1))
        };
        let content = field("content")?.to_string();
        let role = match field("role")? {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(format!(
                    "message {}: unknown role `{other}` (expected system, user or assistant)",
                    i + 1
                ));
            }
        };
        if role == Role::System && i == 0 {
            file.instruction = Some(content);
        } else {
            file.messages.push(MessageTemplate { role, content });
        }
    }
    Ok(file)
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
        let text = export("sst2", &p, Export::Text).unwrap();
        assert_eq!(
            text,
            "Classify the sentiment.\n\nReview: great\nSentiment: positive\n\nReview: {{ text }}\nSentiment:"
        );
        let json = export("sst2", &p, Export::Json).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["role"], "user");
        for (form, ext) in [
            (Export::Toml, "toml"),
            (Export::Text, "txt"),
            (Export::Json, "json"),
        ] {
            let path = dir.path().join(format!("p.{ext}"));
            std::fs::write(&path, export("sst2", &p, form).unwrap()).unwrap();
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
        });
        let json = export("sst2", &p, Export::Json).unwrap();
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
        let plain = export("sst2", &demo_prompt(), Export::Json).unwrap();
        assert!(serde_json::from_str::<Value>(&plain).unwrap().is_array());
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
        let v: Value = serde_json::from_str(&export("c", &p, Export::Json).unwrap()).unwrap();
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
                "unknown role `robot`",
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
