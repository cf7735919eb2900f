//! Prompt files: message templates in Jinja syntax (minijinja) with input variables, optional
//! few-shot demonstrations, and metadata. A prompt renders to chat messages (instruction-tuned
//! models) or to one text (base models); both are first-class. An undefined variable is an
//! error, never an empty string.
//!
//! Every render is bounded ([`TemplateLimits`], `[templates]` in the config): template steps
//! per field (minijinja fuel), the size of the rendered prompt, and the size of any string or
//! list a filter builds on the way (`join`, `replace`, `indent`, `format`, … are checked before
//! they run). minijinja itself refuses `range()` over 100,000 items, string repetition over
//! 100 MB and macro recursion deeper than 500 levels. Going over any of them is
//! [`PromptError::Limit`], naming the prompt, the field and the limit; [`PromptFile::check_limits`]
//! is the check the library makes before it stores a version.
//!
//! ```toml
//! name = "sst2-4shot"
//! instruction = "Classify the sentiment of each review."   # optional, first in either form
//! template = "Review: {{ sentence }}\nSentiment:"          # the example itself (text form)
//! demo_template = "Review: {{ sentence }}\nSentiment: {{ label }}\n\n"
//! [[demos]]
//! sentence = "a gorgeous, witty, seductive movie."
//! label = "positive"
//!
//! # Per-input demonstrations instead of fixed ones: the k pool entries nearest to each
//! # example (see `select`):
//! # [selector]
//! # kind = "knn"
//! # k = 4
//! # [[pool]]
//! # sentence = "..."
//! # label = "..."
//!
//! # Chat form (used for chat models when present):
//! [[messages]]
//! role = "system"
//! content = "You label movie reviews."
//! [[messages]]
//! role = "user"
//! content = "{{ sentence }}"
//! ```

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use metaprompt_llm::{Message, Prompt, PromptFormat, Role};
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod error;
mod limits;

pub use error::PromptError;
use error::{describe, render_error};

use limits::{Bounded, limited_environment, over_limit};
pub use limits::{
    DEFAULT_MAX_FUEL, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_RENDER_TIMEOUT, Limit, TemplateLimits,
    limits, set_limits,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptFile {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Text before everything else (both forms: the system message in chat form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// The example's own part, in text form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// How one demonstration is written in text form (it sees the demo's variables, including
    /// the expected output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_template: Option<String>,
    /// Chat form: message templates; the last user message is the example.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<MessageTemplate>,
    /// Few-shot demonstrations: variables of each demo (including the output field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demos: Vec<BTreeMap<String, Value>>,
    /// Picks each example's demonstrations from `pool` (instead of the fixed `demos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<crate::select::Selector>,
    /// The demonstrations a selector picks from (same shape as `demos`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<BTreeMap<String, Value>>,
    /// Sentences every rewrite must keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// The model this prompt was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_model: Option<String>,
    /// Why the prompt looks the way it does (the meta layer's reasoning; never rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// How it runs: the settings it was evaluated with (`[run]`, [`crate::settings`]); a
    /// server uses them when a request does not say. `None`: the runner's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::settings::RunSettings>,
    /// The file this prompt was loaded from (for errors; never serialized, ignored by `==`).
    #[serde(skip)]
    pub source: SourcePath,
}

/// Where a prompt came from. Two prompts that differ only here are equal.
#[derive(Debug, Clone, Default)]
pub struct SourcePath(pub Option<PathBuf>);

impl PartialEq for SourcePath {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    pub role: Role,
    pub content: String,
}

impl PromptFile {
    pub fn load(path: &Path) -> Result<Self, PromptError> {
        let err = |message: String| PromptError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut p: PromptFile =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        if p.name.is_empty() {
            p.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        p.validate().map_err(err)?;
        p.source = SourcePath(Some(path.to_path_buf()));
        Ok(p)
    }

    /// A prompt that is one text template.
    pub fn from_template(name: &str, template: &str) -> Self {
        Self {
            name: name.into(),
            template: Some(template.into()),
            ..Self::default()
        }
    }

    /// Checks serde cannot make: a body to render, a user message, templates that parse.
    pub fn validate(&self) -> Result<(), String> {
        if self.template.is_none() && self.messages.is_empty() {
            return Err(
                "a prompt needs a `template` (text form) or `[[messages]]` (chat form)".into(),
            );
        }
        if !self.messages.is_empty() && !self.messages.iter().any(|m| m.role == Role::User) {
            return Err("`[[messages]]` needs at least one user message (the example)".into());
        }
        if !self.demos.is_empty() && self.demo_template.is_none() && self.template.is_some() {
            return Err("`[[demos]]` in text form need a `demo_template`".into());
        }
        match &self.selector {
            Some(selector) => selector.validate(self)?,
            None if !self.pool.is_empty() => {
                return Err(
                    "`[[pool]]` is read only by a `[selector]` (add `[selector]` with `kind = \"knn\"` and `k`, or move the entries to `[[demos]]`)".into(),
                );
            }
            None => {}
        }
        if let Some(p) = self.run.as_ref().and_then(|r| r.problem()) {
            return Err(p);
        }
        let env = environment();
        for (field, t) in self.fields() {
            env.template_from_str(t)
                .map_err(|e| format!("template error in `{field}`: {}", describe(&e, t)))?;
        }
        Ok(())
    }

    /// Every template with its field name.
    pub fn fields(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        let named = [
            ("instruction", &self.instruction),
            ("template", &self.template),
            ("demo_template", &self.demo_template),
        ];
        for (name, t) in named {
            if let Some(t) = t {
                out.push((name.to_string(), t.as_str()));
            }
        }
        for (k, m) in self.messages.iter().enumerate() {
            out.push((format!("messages[{k}].content"), m.content.as_str()));
        }
        out
    }

    /// Render for one example, in the model's preferred form. `output` names the expected-output
    /// variable (demonstrations show it; the chat form answers with it).
    ///
    /// A prompt with a selector picks this example's demonstrations here when it compares
    /// words; one that compares the model's embeddings must go through
    /// [`crate::select::render_all`], which asks the model for them.
    pub fn render(
        &self,
        vars: &BTreeMap<String, Value>,
        format: PromptFormat,
        output: Option<&str>,
    ) -> Result<Prompt, PromptError> {
        match &self.selector {
            None => self.render_demos(vars, format, output, &self.demos.iter().collect::<Vec<_>>()),
            Some(selector) => {
                let picks = selector.pick_by_words(self, std::slice::from_ref(vars))?;
                let demos: Vec<&BTreeMap<String, Value>> =
                    picks[0].iter().map(|&i| &self.pool[i]).collect();
                self.render_demos(vars, format, output, &demos)
            }
        }
    }

    /// Render with the given demonstrations (in order) instead of the prompt's own.
    pub fn render_demos(
        &self,
        vars: &BTreeMap<String, Value>,
        format: PromptFormat,
        output: Option<&str>,
        demos: &[&BTreeMap<String, Value>],
    ) -> Result<Prompt, PromptError> {
        self.render_demos_with(vars, format, output, demos, &limits())
    }

    /// [`PromptFile::render_demos`] under the given limits instead of the process-wide ones.
    pub fn render_demos_with(
        &self,
        vars: &BTreeMap<String, Value>,
        format: PromptFormat,
        output: Option<&str>,
        demos: &[&BTreeMap<String, Value>],
        limits: &TemplateLimits,
    ) -> Result<Prompt, PromptError> {
        let (env, filter_over) = limited_environment(limits);
        // Bytes the whole prompt may still take.
        let budget = Cell::new(limits.max_output_bytes);
        let render_field =
            |field: &str, t: &str, vars: &BTreeMap<String, Value>, demo: Option<usize>| {
                let mut out = Bounded {
                    buf: Vec::new(),
                    left: budget.get(),
                    over: false,
                };
                let result = env
                    .template_from_str(t)
                    .and_then(|tmpl| tmpl.render_captured_to(vars, &mut out).map(|_| ()));
                match result {
                    Ok(()) => {
                        budget.set(budget.get().saturating_sub(out.buf.len() as u64));
                        Ok(String::from_utf8_lossy(&out.buf).into_owned())
                    }
                    Err(e) => Err(
                        match over_limit(&e, out.over, filter_over.load(Ordering::Relaxed), limits)
                        {
                            Some((limit, message)) => PromptError::Limit {
                                name: self.name.clone(),
                                path: self.source.0.clone(),
                                field: field.to_string(),
                                demo: demo.map(|d| u16::try_from(d).unwrap_or(u16::MAX)),
                                limit,
                                message,
                            },
                            None => PromptError::Render {
                                name: self.name.clone(),
                                path: self.source.0.clone(),
                                field: field.to_string(),
                                demo,
                                message: render_error(&env, &e, t, vars, output, demo.is_some()),
                            },
                        },
                    ),
                }
            };
        let use_chat =
            format == PromptFormat::Chat && !self.messages.is_empty() || self.template.is_none();
        if use_chat {
            let mut messages = Vec::new();
            if let Some(i) = &self.instruction {
                messages.push(Message::system(render_field("instruction", i, vars, None)?));
            }
            let last_user = self
                .messages
                .iter()
                .rposition(|m| m.role == Role::User)
                .unwrap_or(0);
            for (k, m) in self.messages.iter().enumerate() {
                if k == last_user {
                    // Demonstrations go just before the example: user turn, then the answer.
                    for (d, &demo) in demos.iter().enumerate() {
                        let field = format!("messages[{k}].content");
                        messages.push(Message::user(render_field(
                            &field,
                            &m.content,
                            demo,
                            Some(d),
                        )?));
                        let answer = output
                            .and_then(|o| demo.get(o))
                            .map(crate::dataset::as_text)
                            .unwrap_or_default();
                        messages.push(Message::assistant(answer));
                    }
                }
                messages.push(Message {
                    role: m.role,
                    content: render_field(
                        &format!("messages[{k}].content"),
                        &m.content,
                        vars,
                        None,
                    )?,
                });
            }
            if format == PromptFormat::Text {
                return Ok(Prompt::Text(flatten(&messages)));
            }
            return Ok(Prompt::Chat(messages));
        }
        let mut text = String::new();
        if let Some(i) = &self.instruction {
            text.push_str(&render_field("instruction", i, vars, None)?);
            if !text.ends_with('\n') {
                text.push_str("\n\n");
            }
        }
        if let Some(d) = &self.demo_template {
            for (k, &demo) in demos.iter().enumerate() {
                text.push_str(&render_field("demo_template", d, demo, Some(k))?);
            }
        }
        text.push_str(&render_field(
            "template",
            self.template.as_deref().unwrap_or_default(),
            vars,
            None,
        )?);
        Ok(match format {
            PromptFormat::Text => Prompt::Text(text),
            PromptFormat::Chat => Prompt::Chat(vec![Message::user(text)]),
        })
    }

    /// The input variables the example-side templates use (instruction, template, messages;
    /// not the demonstration template, which the demos fill), sorted. A template that does not
    /// parse contributes none ([`PromptFile::validate`] reports it).
    pub fn variables(&self) -> Vec<String> {
        let env = environment();
        let mut vars = std::collections::BTreeSet::new();
        for (field, t) in self.fields() {
            if field == "demo_template" {
                continue;
            }
            if let Ok(t) = env.template_from_str(t) {
                vars.extend(t.undeclared_variables(false));
            }
        }
        vars.into_iter().collect()
    }

    /// The prompt at its longest: a selector's prompt with the `k` longest pool entries as its
    /// demonstrations (what a context-window check must assume), any other prompt as it is.
    pub fn longest(&self) -> std::borrow::Cow<'_, PromptFile> {
        let Some(selector) = &self.selector else {
            return std::borrow::Cow::Borrowed(self);
        };
        let mut by_length: Vec<&BTreeMap<String, Value>> = self.pool.iter().collect();
        by_length
            .sort_by_key(|d| std::cmp::Reverse(serde_json::to_string(d).map_or(0, |s| s.len())));
        let mut plain = self.clone();
        plain.demos = by_length.into_iter().take(selector.k).cloned().collect();
        plain.selector = None;
        plain.pool.clear();
        std::borrow::Cow::Owned(plain)
    }

    /// The demonstration entries this prompt shows or picks from: the pool under a selector,
    /// else the fixed demos.
    pub fn demo_entries(&self) -> &[BTreeMap<String, Value>] {
        if self.selector.is_some() {
            &self.pool
        } else {
            &self.demos
        }
    }

    /// The prompt as plain TOML (what `export` writes and `load` reads back). An error, never
    /// an empty text, when TOML cannot hold it: a demonstration with a null field names the
    /// demonstration and the field.
    pub fn to_toml(&self) -> Result<String, PromptError> {
        let unwritable = |message: String| PromptError::Unwritable {
            name: self.name.clone(),
            message,
        };
        for (list, entries) in [("demos", &self.demos), ("pool", &self.pool)] {
            for (k, entry) in entries.iter().enumerate() {
                if let Some(field) = entry
                    .iter()
                    .find_map(|(f, v)| null_in(v).map(|p| f.clone() + &p))
                {
                    return Err(unwritable(format!(
                        "{list}[{k}].{field} is null, and TOML has no null (leave the field out of \
                         that row, or give it a value)"
                    )));
                }
            }
        }
        toml::to_string_pretty(self).map_err(|e| unwritable(e.to_string()))
    }
}

/// Where a null sits in `v` (`""` for `v` itself, `[2]` or `.key` inside it), if anywhere.
fn null_in(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(k, v)| null_in(v).map(|p| format!("[{k}]{p}"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(key, v)| null_in(v).map(|p| format!(".{key}{p}"))),
        _ => None,
    }
}

/// A chat transcript for a text-only model.
fn flatten(messages: &[Message]) -> String {
    let mut text = String::new();
    for m in messages {
        match m.role {
            Role::System => text.push_str(&format!("{}\n\n", m.content)),
            Role::User => text.push_str(&format!("User: {}\n", m.content)),
            Role::Assistant => text.push_str(&format!("Assistant: {}\n\n", m.content)),
        }
    }
    text.push_str("Assistant:");
    text
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    pub(super) fn four_shot() -> PromptFile {
        toml::from_str(
            r#"
name = "s"
template = "Review: {{ text }}\nSentiment:"
demo_template = "Review: {{ text }}\nSentiment: {{ label }}\n\n"
[[demos]]
text = "great"
label = "positive"
[[demos]]
text = "awful"
label = "negative"
"#,
        )
        .unwrap()
    }

    #[test]
    fn text_form_with_demos() {
        let p = four_shot();
        let r = p
            .render(
                &vars(&[("text", "fine film")]),
                PromptFormat::Text,
                Some("label"),
            )
            .unwrap();
        assert_eq!(
            r,
            Prompt::Text("Review: great\nSentiment: positive\n\nReview: awful\nSentiment: negative\n\nReview: fine film\nSentiment:".into())
        );
        // A chat model gets the same text as one user message.
        let r = p
            .render(&vars(&[("text", "x")]), PromptFormat::Chat, Some("label"))
            .unwrap();
        assert!(matches!(r, Prompt::Chat(ref m) if m.len() == 1 && m[0].role == Role::User));
    }

    #[test]
    fn chat_form_puts_demos_before_the_example() {
        let p: PromptFile = toml::from_str(
            r#"
instruction = "Label the review."
[[messages]]
role = "user"
content = "{{ text }}"
[[demos]]
text = "great"
label = "positive"
"#,
        )
        .unwrap();
        let Prompt::Chat(m) = p
            .render(&vars(&[("text", "meh")]), PromptFormat::Chat, Some("label"))
            .unwrap()
        else {
            panic!("chat expected")
        };
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(
            (m[2].content.as_str(), m[3].content.as_str()),
            ("positive", "meh")
        );
        let Prompt::Text(t) = p
            .render(&vars(&[("text", "meh")]), PromptFormat::Text, Some("label"))
            .unwrap()
        else {
            panic!("text expected")
        };
        assert!(
            t.starts_with("Label the review.\n\nUser: great\nAssistant: positive")
                && t.ends_with("Assistant:"),
            "{t}"
        );
    }

    #[test]
    fn undefined_variables_and_bad_files_are_errors() {
        let p = PromptFile::from_template("t", "Q: {{ question }}");
        let e = p
            .render(&vars(&[("text", "x")]), PromptFormat::Text, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompt `t`") && e.contains("undefined"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "templte = \"x\"\n").unwrap();
        let e = PromptFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("templte"), "{e}");
        std::fs::write(&path, "name = \"x\"\n").unwrap();
        assert!(
            PromptFile::load(&path)
                .unwrap_err()
                .to_string()
                .contains("needs a `template`")
        );
        std::fs::write(&path, "template = \"{{ oops\"\n").unwrap();
        let e = PromptFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("template error in `template`") && e.contains("line 1"),
            "{e}"
        );
        assert!(
            PromptFile::load(&path)
                .unwrap_err()
                .to_string()
                .contains("template error")
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let p = four_shot();
        let back: PromptFile = toml::from_str(&p.to_toml().unwrap()).unwrap();
        assert_eq!(back, p);
    }

    /// A dataset row with a null field made a demonstration TOML cannot hold: writing it was
    /// an empty text (an empty best.toml, an empty version in the library). Now an error that
    /// says where the null is.
    #[test]
    fn a_demonstration_with_a_null_field_is_an_error_not_an_empty_file() {
        let mut p = four_shot();
        p.demos[1].insert("source".into(), Value::Null);
        let e = p.to_toml().unwrap_err().to_string();
        assert!(e.contains("demos[1].source is null"), "{e}");
        let mut p = four_shot();
        p.demos[0].insert("meta".into(), serde_json::json!({"tags": ["a", null]}));
        let e = p.to_toml().unwrap_err().to_string();
        assert!(e.contains("demos[0].meta.tags[1] is null"), "{e}");
    }
}
