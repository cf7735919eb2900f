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

mod limits;

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

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A template failed to render: the prompt (and its file), the field, and why.
    #[error(
        "{}prompt `{name}`, `{field}`{}: {message}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default(),
        demo.map(|d| format!(" (demo {d})")).unwrap_or_default()
    )]
    Render {
        name: String,
        path: Option<PathBuf>,
        /// `template`, `demo_template`, `instruction` or `messages[N].content`.
        field: String,
        /// The demonstration being rendered, if it was one.
        demo: Option<usize>,
        message: String,
    },
    /// A template went over a render limit ([`TemplateLimits`]): the prompt (and its file), the
    /// field, the limit (`max_fuel`, `max_output_bytes`, `recursion`, `range`, `repetition`)
    /// and what went over it.
    #[error(
        "{}prompt `{name}`, `{field}`{}: {message}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default(),
        demo.map(|d| format!(" (demo {d})")).unwrap_or_default()
    )]
    Limit {
        name: String,
        path: Option<PathBuf>,
        field: String,
        /// The demonstration being rendered (its place among those shown), if it was one.
        demo: Option<u16>,
        /// Which limit.
        limit: Limit,
        message: String,
    },
    /// The selector could not pick demonstrations (the model cannot embed, or failed to).
    #[error(
        "{}prompt `{name}`, `selector`: {message}",
        path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default()
    )]
    Select {
        name: String,
        path: Option<PathBuf>,
        message: String,
    },
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

    /// The prompt as plain TOML (what `export` writes and `load` reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
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

/// A minijinja error without its `<string>` noise: what went wrong, the line and its text.
fn describe(e: &minijinja::Error, source: &str) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        s.push_str(&format!(": {detail}"));
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line}"));
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            let text = text.trim();
            let text: String = text.chars().take(80).collect();
            s.push_str(&format!(": `{text}`"));
        }
        s.push(')');
    }
    s
}

/// A render error, naming the undefined variables when that is what went wrong.
fn render_error(
    env: &Environment<'_>,
    e: &minijinja::Error,
    source: &str,
    vars: &BTreeMap<String, Value>,
    output: Option<&str>,
    demo: bool,
) -> String {
    let mut s = describe(e, source);
    if e.kind() == minijinja::ErrorKind::UndefinedError
        && let Ok(t) = env.template_from_str(source)
    {
        let mut missing: Vec<String> = t
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !vars.contains_key(v) && env.globals().all(|(g, _)| g != v.as_str()))
            .collect();
        missing.sort();
        if missing.is_empty() {
            match undefined_attribute(source, e.line(), vars) {
                Some(what) => s.push_str(&format!("; {what}")),
                None => s.push_str(" (an attribute or item that does not exist)"),
            }
        } else {
            let list = missing
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!("; undefined variable {list}"));
            let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
            known.sort_unstable();
            s.push_str(&format!(" (variables: {})", known.join(", ")));
            if !demo && output.is_some_and(|o| missing.iter().any(|m| m == o)) {
                s.push_str(&format!(
                    "; `{}` is the expected output: only demonstrations see it",
                    output.unwrap_or_default()
                ));
            }
        }
    }
    s
}

/// The first attribute or item access in `source` (on line `line` when known) that the
/// variables do not have: ``undefined attribute `nosuch` of `input` (it has: a, b)``.
fn undefined_attribute(
    source: &str,
    line: Option<usize>,
    vars: &BTreeMap<String, Value>,
) -> Option<String> {
    // `name.attr`, `name["key"]`, `name[0]`, chained; inside `{{ }}` or `{% %}` or not (a
    // false match must still start at a known variable and miss an attribute to be named).
    static ACCESS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"\b([A-Za-z_]\w*)((?:\s*\.\s*[A-Za-z_]\w*|\s*\[\s*(?:"[^"]*"|'[^']*'|\d+)\s*\])+)"#,
        )
        .expect("a valid pattern")
    });
    static SEGMENT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"\.\s*([A-Za-z_]\w*)|\[\s*(?:"([^"]*)"|'([^']*)'|(\d+))\s*\]"#)
            .expect("a valid pattern")
    });
    static BLOCK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?s)\{\{(.*?)\}\}|\{%(.*?)%\}").expect("a valid pattern")
    });
    let lines: Vec<&str> = match line.and_then(|l| source.lines().nth(l.saturating_sub(1))) {
        Some(text) => vec![text, source],
        None => vec![source],
    };
    let expressions = lines.into_iter().flat_map(|text| {
        BLOCK
            .captures_iter(text)
            .filter_map(|b| b.get(1).or(b.get(2)).map(|m| m.as_str()))
    });
    for text in expressions {
        for m in ACCESS.captures_iter(text) {
            let root = &m[1];
            let Some(mut value) = vars.get(root) else {
                continue;
            };
            let mut path = root.to_string();
            for seg in SEGMENT.captures_iter(&m[2]) {
                let (name, index) = match (seg.get(1).or(seg.get(2)).or(seg.get(3)), seg.get(4)) {
                    (Some(n), _) => (n.as_str(), None),
                    (None, Some(i)) => (i.as_str(), i.as_str().parse::<usize>().ok()),
                    (None, None) => break,
                };
                let next = match (value, index) {
                    (Value::Object(map), _) => map.get(name),
                    (Value::Array(items), Some(i)) => items.get(i),
                    _ => None,
                };
                match next {
                    Some(v) => {
                        value = v;
                        path.push_str(&if index.is_some() {
                            format!("[{name}]")
                        } else {
                            format!(".{name}")
                        });
                    }
                    None => {
                        let has = match value {
                            Value::Object(map) if map.is_empty() => "it has none".to_string(),
                            Value::Object(map) => format!(
                                "it has: {}",
                                map.keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            Value::Array(items) => format!("it is a list of {}", items.len()),
                            Value::String(_) => "it is a string".into(),
                            Value::Number(_) => "it is a number".into(),
                            Value::Bool(_) => "it is a boolean".into(),
                            Value::Null => "it is null".into(),
                        };
                        let kind = if index.is_some() { "item" } else { "attribute" };
                        return Some(format!("undefined {kind} `{name}` of `{path}` ({has})"));
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
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

    fn loaded(dir: &Path, text: &str) -> Result<PromptFile, PromptError> {
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        PromptFile::load(&path)
    }

    #[test]
    fn render_errors_name_the_file_the_field_the_line_and_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml").display().to_string();
        let render = |text: &str| {
            loaded(dir.path(), text)
                .unwrap()
                .render(&vars(&[("text", "x")]), PromptFormat::Text, Some("label"))
                .unwrap_err()
                .to_string()
        };
        let e = render("template = \"Q:\\n{{ question }}\"\n");
        assert!(
            e.starts_with(&format!("{file}: prompt `p`, `template`:"))
                && e.contains("line 2")
                && e.contains("undefined variable `question`")
                && !e.contains("<string>"),
            "{e}"
        );
        let e = render("template = \"{{ text.nope.deeper }}\"\n");
        assert!(
            e.contains("`template`")
                && e.contains("undefined attribute `nope` of `text` (it is a string)"),
            "{e}"
        );
        let e = render("template = \"{{ text }} {{ label }}\"\n");
        assert!(e.contains("`label` is the expected output"), "{e}");
        let e = render(
            "template = \"{{ text }}\"\ndemo_template = \"{{ txet }}\"\n[[demos]]\ntext = \"a\"\nlabel = \"b\"\n",
        );
        assert!(
            e.contains("`demo_template` (demo 0)") && e.contains("`txet`"),
            "{e}"
        );
        let e = render("template = \"{% for i in range(100000000) %}x{% endfor %}\"\n");
        assert!(e.contains("`template`") && e.contains(&file), "{e}");
        let e = render("template = \"{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}\"\n");
        assert!(e.contains("`template`") && e.contains(&file), "{e}");
        let e = render(
            "instruction = \"Hi\"\n[[messages]]\nrole = \"system\"\ncontent = \"s\"\n[[messages]]\nrole = \"user\"\ncontent = \"a\"\n[[messages]]\nrole = \"user\"\ncontent = \"{{ nope }}\"\n",
        );
        assert!(
            e.contains("`messages[2].content`") && e.contains("`nope`"),
            "{e}"
        );
        // An unknown filter is found when rendering.
        let e = render("template = \"{{ text | nofilter }}\"\n");
        assert!(
            e.starts_with(&file) && e.contains("`template`") && e.contains("nofilter"),
            "{e}"
        );
    }

    #[test]
    fn an_undefined_attribute_or_item_is_named_with_what_its_parent_has() {
        let dir = tempfile::tempdir().unwrap();
        let vars: BTreeMap<String, Value> = [
            (
                "input".to_string(),
                serde_json::json!({"a": 1, "b": {"c": 2}}),
            ),
            ("tags".to_string(), serde_json::json!(["x", "y"])),
        ]
        .into();
        let render = |template: &str| {
            let text = format!("template = {}\n", toml::Value::String(template.into()));
            loaded(dir.path(), &text)
                .unwrap()
                .render(&vars, PromptFormat::Text, None)
                .unwrap_err()
                .to_string()
        };
        let e = render("Q: {{ input.a }}\n{{ input.nosuch }}");
        assert!(
            e.contains("line 2")
                && e.contains("undefined attribute `nosuch` of `input` (it has: a, b)"),
            "{e}"
        );
        let e = render("{{ input.b.d }}");
        assert!(
            e.contains("undefined attribute `d` of `input.b` (it has: c)"),
            "{e}"
        );
        let e = render("{{ input[\"zz\"] }}");
        assert!(e.contains("undefined attribute `zz` of `input`"), "{e}");
        let e = render("{% if tags[5] %}x{% endif %}{{ tags[5] }}");
        assert!(
            e.contains("undefined item `5` of `tags` (it is a list of 2)"),
            "{e}"
        );
    }

    #[test]
    fn a_prompt_error_stays_small() {
        // Errors that carry a `PromptError` (the engine's, the optimizer's) stay under
        // clippy's `result_large_err`.
        assert!(std::mem::size_of::<PromptError>() <= 112);
    }

    #[test]
    fn round_trips_through_toml() {
        let p = four_shot();
        let back: PromptFile = toml::from_str(&p.to_toml()).unwrap();
        assert_eq!(back, p);
    }
}
