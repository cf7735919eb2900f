//! Meta-prompts: the prompts the meta model runs to write, rewrite and check prompts.
//!
//! They are files, not string literals: Jinja templates (minijinja) in TOML files shipped in
//! `crates/optimize/templates/` and compiled in; a user directory (`--templates DIR`) may hold
//! files of the same names that replace them. Each file has up to two forms:
//!
//! - `[chat]` — `system` and `user` messages, for instruction-tuned meta models;
//! - `[text]` — one completion `prompt` for base models (the embedded Gemma is one): a document
//!   the model continues, with `stop` sequences and an optional `suffix` appended to the
//!   continuation (text the template writes in, such as protected constraints, that a base model
//!   would not copy reliably).
//!
//! The form follows the meta model's [`PromptFormat`]. Every part is also a named template
//! (`analyze.text`, `generate.system`, …) that other parts may `{% include %}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metaprompt_llm::{LlmError, Message, Prompt, PromptFormat, Provider, Request, Response};
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;

/// The meta-prompts shipped with metaprompt: (name, TOML source).
pub const BUILTIN: &[(&str, &str)] = &[
    ("analyze", include_str!("../templates/analyze.toml")),
    ("generate", include_str!("../templates/generate.toml")),
    ("translate", include_str!("../templates/translate.toml")),
    ("guard", include_str!("../templates/guard.toml")),
    ("opro", include_str!("../templates/opro.toml")),
    ("ape", include_str!("../templates/ape.toml")),
    ("paraphrase", include_str!("../templates/paraphrase.toml")),
    ("gradient", include_str!("../templates/gradient.toml")),
    ("edit", include_str!("../templates/edit.toml")),
    ("reflect", include_str!("../templates/reflect.toml")),
    ("evolve", include_str!("../templates/evolve.toml")),
    ("hyper", include_str!("../templates/hyper.toml")),
    ("diagnose", include_str!("../templates/diagnose.toml")),
    ("form", include_str!("../templates/form.toml")),
    ("worked", include_str!("../templates/worked.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("meta-prompt `{name}`: {message}")]
    Render { name: String, message: String },
    #[error(
        "meta-prompt `{name}` has no {form} form, which the meta model {model} needs; add a \
         [{form}] table to {name}.toml in your templates directory, or use a {other} meta model"
    )]
    MissingForm {
        name: String,
        form: &'static str,
        other: &'static str,
        model: String,
    },
    #[error("meta model {model}: {source}")]
    Call {
        model: String,
        #[source]
        source: LlmError,
    },
    #[error(transparent)]
    Prompt(#[from] metaprompt_eval::prompt::PromptError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    #[allow(dead_code)] // documentation for people reading the file
    description: String,
    chat: Option<ChatForm>,
    text: Option<TextForm>,
    /// Named snippets the other meta-prompts include as `{name}.{part}` (`form.rules`); a file
    /// of parts only is never run itself.
    #[serde(default)]
    parts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatForm {
    system: String,
    user: String,
    #[serde(default = "default_chat_tokens")]
    max_tokens: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextForm {
    prompt: String,
    #[serde(default)]
    suffix: String,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default = "default_text_tokens")]
    max_tokens: u32,
}

fn default_chat_tokens() -> u32 {
    800
}
fn default_text_tokens() -> u32 {
    120
}

/// Where a meta-prompt came from (shown to users who override them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

/// The set of meta-prompts in effect.
#[derive(Debug)]
pub struct MetaPrompts {
    env: Environment<'static>,
    files: BTreeMap<String, (MetaFile, Origin)>,
    system: Option<String>,
}

/// A rendered meta-prompt, ready to send, and how to read its answer.
#[derive(Debug, Clone)]
pub struct MetaRequest {
    pub request: Request,
    /// Appended to a text-form continuation.
    pub suffix: String,
}

impl MetaRequest {
    /// The meta model's answer as the template defines it: the continuation (trimmed) plus the
    /// suffix in text form (nothing when the model wrote nothing); the whole answer in chat form.
    pub fn answer(&self, response: &Response) -> String {
        match self.request.prompt {
            Prompt::Text(_) if !response.text.chars().any(char::is_alphanumeric) => String::new(),
            Prompt::Text(_) => format!("{}{}", response.text.trim(), self.suffix)
                .trim()
                .to_string(),
            Prompt::Chat(_) => response.text.trim().to_string(),
        }
    }
}

impl MetaPrompts {
    /// The shipped meta-prompts.
    pub fn builtin() -> Self {
        // The shipped files are tested to parse (`builtin_templates_parse`).
        Self::load(None).unwrap_or_else(|e| panic!("a shipped meta-prompt is broken: {e}"))
    }

    /// The shipped meta-prompts, with any in `dir` (`<name>.toml`) replacing them.
    pub fn load(dir: Option<&Path>) -> Result<Self, MetaError> {
        let mut sources: BTreeMap<String, (String, Origin)> = BUILTIN
            .iter()
            .map(|(n, s)| (n.to_string(), (s.to_string(), Origin::Builtin)))
            .collect();
        if let Some(dir) = dir {
            let err = |message: String| MetaError::File {
                path: dir.to_path_buf(),
                message,
            };
            let entries = std::fs::read_dir(dir)
                .map_err(|e| err(format!("cannot read the templates directory: {e}")))?;
            for entry in entries {
                let path = entry.map_err(|e| err(e.to_string()))?.path();
                if path.extension().is_none_or(|e| e != "toml") {
                    continue;
                }
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !sources.contains_key(&name) {
                    let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                    return Err(MetaError::File {
                        path,
                        message: format!(
                            "unknown meta-prompt `{name}`; the known ones are {}",
                            known.join(", ")
                        ),
                    });
                }
                let text = std::fs::read_to_string(&path).map_err(|e| MetaError::File {
                    path: path.clone(),
                    message: format!("cannot read: {e}"),
                })?;
                sources.insert(name, (text, Origin::File(path)));
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut files = BTreeMap::new();
        for (name, (text, origin)) in sources {
            let path = match &origin {
                Origin::Builtin => PathBuf::from(format!("<built-in>/{name}.toml")),
                Origin::File(p) => p.clone(),
            };
            let file: MetaFile = toml::from_str(&text).map_err(|e| MetaError::File {
                path: path.clone(),
                message: e.to_string().trim_end().to_string(),
            })?;
            let mut parts = Vec::new();
            if let Some(c) = &file.chat {
                parts.push(("system", c.system.clone()));
                parts.push(("user", c.user.clone()));
            }
            if let Some(t) = &file.text {
                parts.push(("text", t.prompt.clone()));
                parts.push(("suffix", t.suffix.clone()));
            }
            for (part, source) in &file.parts {
                parts.push((part.as_str(), source.clone()));
            }
            for (part, source) in parts {
                env.add_template_owned(format!("{name}.{part}"), source)
                    .map_err(|e| MetaError::File {
                        path: path.clone(),
                        message: format!("[{part}] template error: {e}"),
                    })?;
            }
            files.insert(name, (file, origin));
        }
        Ok(Self {
            env,
            files,
            system: None,
        })
    }

    /// Replace the system message of every chat-form meta-prompt (the meta model's persona).
    pub fn with_system(mut self, system: Option<String>) -> Self {
        self.system = system;
        self
    }

    /// Where each meta-prompt in effect comes from.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &Origin)> {
        self.files.iter().map(|(n, (_, o))| (n.as_str(), o))
    }

    /// Render meta-prompt `name` in the form `format` with the variables of `ctx`.
    pub fn render(
        &self,
        name: &str,
        format: PromptFormat,
        ctx: &serde_json::Value,
    ) -> Result<MetaRequest, MetaError> {
        let (file, _) = self.files.get(name).ok_or_else(|| MetaError::Render {
            name: name.into(),
            message: "no such meta-prompt".into(),
        })?;
        let render = |part: &str| -> Result<String, MetaError> {
            let t = self
                .env
                .get_template(&format!("{name}.{part}"))
                .map_err(|e| self.error(name, &e))?;
            t.render(ctx).map_err(|e| self.error(name, &e))
        };
        let missing = |form, other| MetaError::MissingForm {
            name: name.into(),
            form,
            other,
            model: String::new(),
        };
        match format {
            PromptFormat::Chat => {
                let chat = file.chat.as_ref().ok_or_else(|| missing("chat", "text"))?;
                let system = match &self.system {
                    Some(s) => s.clone(),
                    None => render("system")?,
                };
                let request = Request::chat(vec![
                    Message::system(system.trim().to_string()),
                    Message::user(render("user")?.trim().to_string()),
                ])
                .max_tokens(chat.max_tokens);
                Ok(MetaRequest {
                    request,
                    suffix: String::new(),
                })
            }
            PromptFormat::Text => {
                let text = file.text.as_ref().ok_or_else(|| missing("text", "chat"))?;
                let mut request = Request::text(render("text")?).max_tokens(text.max_tokens);
                request.stop.clone_from(&text.stop);
                Ok(MetaRequest {
                    request,
                    suffix: render("suffix")?,
                })
            }
        }
    }

    /// The instructions the meta-prompts show as examples of form (each `<prompt>…</prompt>`
    /// of the `form` parts, rendered without a task): a small meta model copies one now and
    /// then instead of writing its own, and the junk screen rejects those copies.
    pub fn shown_instructions(&self) -> Vec<String> {
        let Some((file, _)) = self.files.get("form") else {
            return Vec::new();
        };
        let empty = serde_json::json!({});
        file.parts
            .keys()
            .filter_map(|part| {
                self.env
                    .get_template(&format!("form.{part}"))
                    .and_then(|t| t.render(&empty))
                    .ok()
            })
            .flat_map(|text| {
                text.split("<prompt>")
                    .skip(1)
                    .filter_map(|s| s.split_once("</prompt>").map(|(i, _)| i.trim().to_string()))
                    .collect::<Vec<_>>()
            })
            .filter(|i| !i.is_empty())
            .collect()
    }

    /// Whether meta-prompt `name` can be rendered for a model of `format`.
    pub fn has_form(&self, name: &str, format: PromptFormat) -> bool {
        self.files.get(name).is_some_and(|(f, _)| match format {
            PromptFormat::Chat => f.chat.is_some(),
            PromptFormat::Text => f.text.is_some(),
        })
    }

    fn error(&self, name: &str, e: &minijinja::Error) -> MetaError {
        let mut message = e.to_string();
        if let Some(detail) = e.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        if let Some((_, Origin::File(p))) = self.files.get(name) {
            message.push_str(&format!(" in {}", p.display()));
        }
        MetaError::Render {
            name: name.into(),
            message,
        }
    }

    /// Run meta-prompt `name` on `model` `n` times (samples 0..n at `temperature`, seeded), and
    /// read each answer. One failed sample does not fail the others.
    pub async fn sample(
        &self,
        model: &Arc<dyn Provider>,
        name: &str,
        ctx: &serde_json::Value,
        temperature: f32,
        seed: u64,
        n: u32,
    ) -> Result<Vec<Result<String, MetaError>>, MetaError> {
        let format = model.info().format;
        let meta = self.render(name, format, ctx).map_err(|e| match e {
            MetaError::MissingForm {
                name, form, other, ..
            } => MetaError::MissingForm {
                name,
                form,
                other,
                model: model.info().name.clone(),
            },
            e => e,
        })?;
        let requests: Vec<Request> = (0..n)
            .map(|i| {
                let mut r = meta.request.clone().temperature(temperature);
                r.seed = Some(seed);
                r.sample = i;
                r
            })
            .collect();
        Ok(model
            .complete_batch(&requests)
            .await
            .into_iter()
            .map(|r| {
                r.map(|r| meta.answer(&r))
                    .map_err(|source| MetaError::Call {
                        model: model.info().name.clone(),
                        source,
                    })
            })
            .collect())
    }

    /// Run meta-prompt `name` once.
    pub async fn call(
        &self,
        model: &Arc<dyn Provider>,
        name: &str,
        ctx: &serde_json::Value,
        temperature: f32,
        seed: u64,
    ) -> Result<String, MetaError> {
        self.sample(model, name, ctx, temperature, seed, 1)
            .await?
            .pop()
            .unwrap_or_else(|| {
                Err(MetaError::Render {
                    name: name.into(),
                    message: "no answer".into(),
                })
            })
    }
}

/// The text between `<tag>` and `</tag>` (or to the end when the closing tag is missing), or
/// `None` when the opening tag is absent.
pub fn tagged<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let rest = &text[start..];
    Some(rest.find(&close).map_or(rest, |end| &rest[..end]).trim())
}

/// A prompt out of a meta model's answer: between `<prompt>` tags when present, else the whole
/// answer without a surrounding code fence.
pub fn prompt_from_answer(answer: &str) -> String {
    if let Some(p) = tagged(answer, "prompt") {
        return p.to_string();
    }
    let t = answer.trim();
    let t = t
        .strip_prefix("```")
        .map(|rest| {
            let body = rest.split_once('\n').map_or("", |(_, b)| b);
            body.trim_end().strip_suffix("```").unwrap_or(body)
        })
        .unwrap_or(t);
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The context the snapshots render with: an SST-2-like task with one protected constraint.
    fn ctx() -> serde_json::Value {
        json!({
            "task": {
                "name": "sst2",
                "description": "Classify the sentiment of a movie review as positive or negative.",
                "inputs": ["sentence"],
                "output": "label",
                "labels": ["negative", "positive"],
            },
            "examples": [
                {"input": "a gorgeous, witty, seductive movie.", "output": "positive"},
                {"input": "the plot is nothing but boilerplate clichés.", "output": "negative"},
            ],
            "constraints": ["Never mention the reviewer's name."],
            "analysis": "Sarcasm reads as positive words with a negative meaning.",
            "target": {"name": "local:gemma-3-270m", "format": "text", "provider": "local"},
            "source": {
                "model": "openai:gpt-4o-mini",
                "format": "chat",
                "text": "You are a film critic.\nLabel the review's sentiment.",
            },
            "candidate": "Label the sentiment. Never mention the reviewer's name.",
            "trajectory": [
                {"instruction": "Say positive.", "score": 50},
                {"instruction": "Label the review's sentiment.", "score": 81},
            ],
            "instruction": "Label the review's sentiment.",
            "errors": [
                {"input": "not bad at all", "output": "negative", "expected": "positive"},
            ],
            "gradient": "It ignores negated criticism.",
            "mode": "first",
            "style": "Think step by step.",
            "mutation": "Make the instruction shorter.",
            "population": ["Label the review.", "Say the sentiment."],
            "results": [
                {"input": "not bad at all", "output": "negative", "expected": "positive", "score": 0.0, "feedback": "expected positive"},
                {"input": "a delight", "output": "positive", "expected": "positive", "score": 1.0, "feedback": ""},
            ],
            "prompt": {
                "name": "support",
                "instruction": "Route the question to a team.",
                "template": "Question: {{ question }}\nTeam:",
                "labels": ["tech", "other"],
            },
            "slice": "topic=billing",
            "summary": "40 failing inferences on topic=billing; answered `other` ×40; corrected to `billing` ×40.",
            "failing": [{"input": "where is my invoice", "output": "other", "expected": "billing"}],
            "passing": [{"input": "my laptop is slow", "output": "tech"}],
            "rejections": ["It routes refunds to billing too."],
            "input": "I have two lamps, a flute and a drum. How many musical instruments do I have?",
            "answer": "2",
            "marker": "Answer:",
        })
    }

    /// A readable form of a rendered meta-prompt, for snapshots.
    fn show(m: &MetaRequest) -> String {
        let mut s = format!(
            "max_tokens: {:?}\nstop: {:?}\n",
            m.request.max_tokens, m.request.stop
        );
        match &m.request.prompt {
            Prompt::Text(t) => s.push_str(&format!("--- text ---\n{t}\n")),
            Prompt::Chat(ms) => {
                for msg in ms {
                    s.push_str(&format!("--- {:?} ---\n{}\n", msg.role, msg.content));
                }
            }
        }
        if !m.suffix.is_empty() {
            s.push_str(&format!("--- suffix ---\n{}\n", m.suffix));
        }
        s
    }

    #[test]
    fn builtin_templates_parse() {
        let m = MetaPrompts::load(None).unwrap();
        assert_eq!(m.origins().count(), BUILTIN.len());
    }

    #[test]
    fn rendered_meta_prompts_are_pinned() {
        let m = MetaPrompts::builtin();
        for (name, _) in BUILTIN {
            for format in [PromptFormat::Chat, PromptFormat::Text] {
                if !m.has_form(name, format) {
                    continue;
                }
                let r = m.render(name, format, &ctx()).unwrap();
                let form = if format == PromptFormat::Chat {
                    "chat"
                } else {
                    "text"
                };
                insta::assert_snapshot!(format!("{name}_{form}"), show(&r));
            }
        }
    }

    #[test]
    fn guard_has_no_text_form_and_says_what_to_do() {
        let m = MetaPrompts::builtin();
        let e = m.render("guard", PromptFormat::Text, &ctx()).unwrap_err();
        assert!(e.to_string().contains("no text form"), "{e}");
    }

    #[test]
    fn a_user_directory_overrides_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("analyze.toml"),
            "description = \"mine\"\n[text]\nprompt = \"Think about {{ task.name }}:\"\n",
        )
        .unwrap();
        let m = MetaPrompts::load(Some(dir.path())).unwrap();
        let r = m.render("analyze", PromptFormat::Text, &ctx()).unwrap();
        assert_eq!(r.request.prompt, Prompt::Text("Think about sst2:".into()));
        // The override has no chat form; the built-in one is not mixed in.
        assert!(!m.has_form("analyze", PromptFormat::Chat));
        // `generate` includes `analyze.text`, so it sees the override too.
        let g = m.render("generate", PromptFormat::Text, &ctx()).unwrap();
        let Prompt::Text(t) = g.request.prompt else {
            panic!()
        };
        assert!(t.starts_with("Think about sst2:"), "{t}");

        std::fs::write(dir.path().join("generat.toml"), "description = \"x\"").unwrap();
        let e = MetaPrompts::load(Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("generat.toml") && e.contains("unknown meta-prompt"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("generat.toml")).unwrap();

        std::fs::write(
            dir.path().join("guard.toml"),
            "description = \"x\"\n[chat]\nsystem = \"s\"\nuser = \"{{ nope }}\"\n",
        )
        .unwrap();
        let m = MetaPrompts::load(Some(dir.path())).unwrap();
        let e = m
            .render("guard", PromptFormat::Chat, &ctx())
            .unwrap_err()
            .to_string();
        assert!(e.contains("undefined") && e.contains("guard.toml"), "{e}");
        std::fs::write(
            dir.path().join("guard.toml"),
            "description = \"x\"\n[chat]\nsystem = \"s\"\nusr = \"u\"\n",
        )
        .unwrap();
        let e = MetaPrompts::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("guard.toml") && e.contains("usr"), "{e}");
    }

    #[test]
    fn system_override_replaces_the_persona() {
        let m = MetaPrompts::builtin().with_system(Some("You are terse.".into()));
        let r = m.render("generate", PromptFormat::Chat, &ctx()).unwrap();
        let Prompt::Chat(ms) = r.request.prompt else {
            panic!()
        };
        assert_eq!(ms[0].content, "You are terse.");
    }

    #[test]
    fn prompts_are_read_from_tags_or_fences() {
        assert_eq!(
            prompt_from_answer("notes\n<prompt>\nDo X.\n</prompt>"),
            "Do X."
        );
        assert_eq!(prompt_from_answer("<prompt>Do Y."), "Do Y.");
        assert_eq!(prompt_from_answer("```text\nDo Z.\n```"), "Do Z.");
        assert_eq!(prompt_from_answer("  Do W.  "), "Do W.");
    }
}
