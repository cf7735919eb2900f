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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metaprompt_llm::{Message, Prompt, PromptFormat, Role};
use minijinja::value::{Rest, Value as JinjaValue};
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The render limit a template went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `[templates] max_fuel`: template steps.
    Fuel,
    /// `[templates] max_output_bytes`: the rendered prompt, or a value a filter builds.
    OutputBytes,
    /// minijinja's nesting of macro calls and includes (500 levels).
    Recursion,
    /// minijinja's `range()` (100,000 items).
    Range,
    /// minijinja's string repetition (100 MB).
    Repetition,
}

impl Limit {
    /// The limit's name: `max_fuel`, `max_output_bytes`, `recursion`, `range`, `repetition`.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Fuel => "max_fuel",
            Limit::OutputBytes => "max_output_bytes",
            Limit::Recursion => "recursion",
            Limit::Range => "range",
            Limit::Repetition => "repetition",
        }
    }
}

/// Template steps one field may take per render when `[templates] max_fuel` is unset: far
/// above any honest prompt (every shipped example renders well within it), a fraction of a
/// second of work.
pub const DEFAULT_MAX_FUEL: u64 = 2_000_000;

/// Largest rendered prompt (and largest value a filter may build) when
/// `[templates] max_output_bytes` is unset.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 8 * 1024 * 1024;

/// How long `serve` waits for one render when `[templates] timeout_secs` is unset.
pub const DEFAULT_RENDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one render may cost. Every render is bounded by the process-wide limits
/// ([`set_limits`], defaults until then) unless it is given its own
/// ([`PromptFile::render_demos_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Template steps (minijinja fuel, about one per instruction) per field per render.
    pub max_fuel: u64,
    /// Bytes the rendered prompt may reach; also the largest string (bytes) or list (items) a
    /// filter may take or build.
    pub max_output_bytes: u64,
    /// How long a server waits for one render (the render itself is bounded by the others).
    pub timeout: Duration,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            max_fuel: DEFAULT_MAX_FUEL,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            timeout: DEFAULT_RENDER_TIMEOUT,
        }
    }
}

impl TemplateLimits {
    /// The limits `[templates]` sets, defaults for what it leaves out.
    pub fn from_config(config: &metaprompt_llm::config::TemplatesConfig) -> Self {
        let d = Self::default();
        Self {
            max_fuel: config.max_fuel.unwrap_or(d.max_fuel).max(1),
            max_output_bytes: config.max_output_bytes.unwrap_or(d.max_output_bytes),
            timeout: config
                .timeout_secs
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(d.timeout, Duration::from_secs_f64),
        }
    }
}

/// The one process-wide setting of this workspace, and why: a render happens in dozens of
/// places (evaluator, optimizers, projections, the meta layer, the gateway, library adds), the
/// limits are the operator's safety setting rather than a per-job choice, and a render that
/// forgets to pass them must still be bounded. `Engine::open` (and the CLI's library commands,
/// which open no engine) set it from `[templates]`; the defaults hold until then. Two engines
/// with different `[templates]` in one process share the last one set.
static LIMITS: std::sync::RwLock<Option<TemplateLimits>> = std::sync::RwLock::new(None);

/// Set the limits every later render in this process uses (whoever opens the config calls
/// this once).
pub fn set_limits(limits: TemplateLimits) {
    let mut l = LIMITS.write().unwrap_or_else(|e| e.into_inner());
    *l = Some(limits);
}

/// The limits renders use now: the last [`set_limits`], else the defaults.
pub fn limits() -> TemplateLimits {
    LIMITS
        .read()
        .map(|l| *l)
        .unwrap_or_else(|e| *e.into_inner())
        .unwrap_or_default()
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

    /// Render the prompt as it would be served, with its own demonstrations (a selector's `k`
    /// longest pool entries), for inputs taken from its first demonstrations and from
    /// `{{ name }}` placeholders, in both forms: the first render that goes over `limits` is the
    /// error. What the library checks before it stores a version, so a template that does
    /// unbounded work on its own content is never stored. Other render errors (an attribute a
    /// placeholder does not have) are not this check's business.
    pub fn check_limits(&self, limits: &TemplateLimits) -> Result<(), PromptError> {
        /// Demonstrations also tried as inputs (each render is bounded; this bounds their number).
        const DEMO_INPUTS: usize = 4;
        // The template's own globals (`range`, `namespace`, …) are not inputs to stand in for.
        let env = environment();
        let mut names = self.variables();
        names.retain(|n| env.globals().all(|(g, _)| g != n.as_str()));
        let placeholders: BTreeMap<String, Value> = names
            .iter()
            .map(|n| (n.clone(), Value::String(format!("{{{{ {n} }}}}"))))
            .collect();
        let plain = self.longest();
        let output = plain.demo_entries().first().and_then(|d| {
            let mut unused = d.keys().filter(|k| !names.contains(*k));
            match (unused.next(), unused.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        });
        let mut inputs = vec![placeholders.clone()];
        for demo in self.demo_entries().iter().take(DEMO_INPUTS) {
            let mut vars = placeholders.clone();
            vars.extend(
                demo.iter()
                    .filter(|(k, _)| names.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            inputs.push(vars);
        }
        let demos: Vec<&BTreeMap<String, Value>> = plain.demos.iter().collect();
        for vars in &inputs {
            for format in [PromptFormat::Text, PromptFormat::Chat] {
                if let Err(e @ PromptError::Limit { .. }) =
                    plain.render_demos_with(vars, format, output.as_deref(), &demos, limits)
                {
                    return Err(e);
                }
            }
        }
        Ok(())
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

/// The environment renders use: [`environment`] with fuel, and the filters that build strings
/// or lists checked against `max_output_bytes` before and after they run (the flag says one
/// refused).
fn limited_environment(limits: &TemplateLimits) -> (Environment<'static>, Arc<AtomicBool>) {
    use minijinja::filters as f;
    let mut env = environment();
    env.set_fuel(Some(limits.max_fuel));
    let over = Arc::new(AtomicBool::new(false));
    let cap = limits.max_output_bytes;
    let checked: [(&'static str, JinjaValue); 27] = [
        ("replace", JinjaValue::from_function(f::replace)),
        ("join", JinjaValue::from_function(f::join)),
        ("indent", JinjaValue::from_function(f::indent)),
        ("format", JinjaValue::from_function(f::format)),
        ("batch", JinjaValue::from_function(f::batch)),
        ("slice", JinjaValue::from_function(f::slice)),
        ("list", JinjaValue::from_function(f::list)),
        ("string", JinjaValue::from_function(f::string)),
        ("pprint", JinjaValue::from_function(f::pprint)),
        ("sort", JinjaValue::from_function(f::sort)),
        ("unique", JinjaValue::from_function(f::unique)),
        ("reverse", JinjaValue::from_function(f::reverse)),
        ("sum", JinjaValue::from_function(f::sum)),
        ("min", JinjaValue::from_function(f::min)),
        ("max", JinjaValue::from_function(f::max)),
        ("first", JinjaValue::from_function(f::first)),
        ("last", JinjaValue::from_function(f::last)),
        ("map", JinjaValue::from_function(f::map)),
        ("select", JinjaValue::from_function(f::select)),
        ("reject", JinjaValue::from_function(f::reject)),
        ("selectattr", JinjaValue::from_function(f::selectattr)),
        ("rejectattr", JinjaValue::from_function(f::rejectattr)),
        ("groupby", JinjaValue::from_function(f::groupby)),
        ("chain", JinjaValue::from_function(f::chain)),
        ("zip", JinjaValue::from_function(f::zip)),
        ("dictsort", JinjaValue::from_function(f::dictsort)),
        ("items", JinjaValue::from_function(f::items)),
    ];
    for (name, inner) in checked {
        let over = over.clone();
        env.add_filter(
            name,
            move |state: &State<'_, '_>, args: Rest<JinjaValue>| -> Result<JinjaValue, minijinja::Error> {
                let refuse = |size: u64, what: &str| {
                    over.store(true, Ordering::Relaxed);
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "`{name}` would {what} {size} bytes or items, over `[templates] max_output_bytes` = {cap}"
                        ),
                    )
                };
                let before = filter_estimate(name, &args);
                if before > cap {
                    return Err(refuse(before, "build"));
                }
                let rv = inner.call(state, &args)?;
                let after = size_of(&rv);
                if after > cap {
                    return Err(refuse(after, "build"));
                }
                Ok(rv)
            },
        );
    }
    (env, over)
}

/// A value's size as the limits count it: a string's bytes, a list's or map's items (a lazily
/// repeated list counts every repetition), 0 for anything else.
fn size_of(v: &JinjaValue) -> u64 {
    match v.as_str() {
        Some(s) => s.len() as u64,
        None => v.len().unwrap_or(0) as u64,
    }
}

/// An integer argument (or keyword argument) taken as a width or count.
fn int_of(v: &JinjaValue) -> u64 {
    i64::try_from(v.clone()).map_or(0, |n| n.max(0) as u64)
}

/// An upper bound on what a checked filter builds, from its arguments alone (the first is the
/// value filtered). Every argument counts by its size; the filters that multiply add their
/// product.
fn filter_estimate(name: &str, args: &[JinjaValue]) -> u64 {
    let largest = args.iter().map(size_of).max().unwrap_or(0);
    let first = args.first().map(size_of).unwrap_or(0);
    let str_len = |i: usize| {
        args.get(i)
            .and_then(|v| v.as_str())
            .map_or(0, |s| s.len() as u64)
    };
    let kwarg = |key: &str| {
        args.last()
            .filter(|v| v.is_kwargs())
            .and_then(|v| v.get_attr(key).ok())
            .filter(|v| !v.is_undefined() && !v.is_none())
    };
    let product = match name {
        // Every item's text plus a separator between each.
        "join" if largest <= u32::MAX as u64 => {
            let items: u64 = args
                .first()
                .and_then(|v| v.try_iter().ok())
                .map(|it| it.map(|item| size_of(&item).max(8)).sum())
                .unwrap_or(0);
            items.saturating_add(first.saturating_mul(str_len(1)))
        }
        // Each match (every position, for an empty pattern) becomes the replacement.
        "replace" => {
            let (from, to) = (str_len(1), str_len(2));
            if to > from {
                first.saturating_add((first / from.max(1) + 1).saturating_mul(to))
            } else {
                first
            }
        }
        // Every line gets the indent.
        "indent" => {
            let width = args
                .get(1)
                .filter(|v| !v.is_kwargs())
                .map(int_of)
                .or_else(|| kwarg("width").map(|v| int_of(&v)))
                .unwrap_or(4);
            let lines = args
                .first()
                .and_then(|v| v.as_str())
                .map_or(1, |s| s.matches('\n').count() as u64 + 1);
            first.saturating_add(lines.saturating_mul(width))
        }
        // A printf width pads to that many characters, once per conversion.
        "format" => {
            let spec = args.first().and_then(|v| v.as_str()).unwrap_or_default();
            let widest = spec
                .split(|c: char| !c.is_ascii_digit())
                .filter(|d| !d.is_empty())
                .map(|d| d.parse::<u64>().unwrap_or(u64::MAX))
                .max()
                .unwrap_or(0);
            let conversions = spec.matches('%').count() as u64;
            let args_size: u64 = args.iter().skip(1).map(size_of).sum();
            first
                .saturating_add(args_size)
                .saturating_add(conversions.saturating_mul(widest))
        }
        // The last batch is filled to the batch size.
        "batch" => first.saturating_add(args.get(1).map(int_of).unwrap_or(0)),
        _ => 0,
    };
    largest.max(product)
}

/// Rendered output, refused past `left` bytes.
struct Bounded {
    buf: Vec<u8>,
    left: u64,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() as u64 > self.left {
            self.over = true;
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.left -= data.len() as u64;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The limit a render error is, with what to say about it; `None` for any other error.
fn over_limit(
    e: &minijinja::Error,
    output_over: bool,
    filter_over: bool,
    limits: &TemplateLimits,
) -> Option<(Limit, String)> {
    let cap = limits.max_output_bytes;
    if output_over {
        return Some((
            Limit::OutputBytes,
            format!(
                "the rendered prompt would be larger than `[templates] max_output_bytes` = {cap} bytes"
            ),
        ));
    }
    let mut kinds = Vec::new();
    let mut details = String::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(m) = err.downcast_ref::<minijinja::Error>() {
            kinds.push(m.kind());
            details.push_str(m.detail().unwrap_or_default());
            details.push('\n');
        }
        next = err.source();
    }
    if kinds.contains(&ErrorKind::OutOfFuel) {
        return Some((
            Limit::Fuel,
            format!(
                "rendering took more than `[templates] max_fuel` = {} template steps (a loop or recursion doing too much work)",
                limits.max_fuel
            ),
        ));
    }
    let detail = details
        .lines()
        .find(|d| !d.is_empty())
        .unwrap_or_default()
        .to_string();
    if filter_over {
        return Some((Limit::OutputBytes, detail));
    }
    let engine = [
        (
            "recursion limit exceeded",
            Limit::Recursion,
            "macro calls or includes nest deeper than the template engine allows",
        ),
        (
            "range has too many elements",
            Limit::Range,
            "`range()` over more than 100,000 items",
        ),
        (
            "repeated string is too large",
            Limit::Repetition,
            "a repeated string over the template engine's 100 MB",
        ),
    ];
    engine
        .into_iter()
        .find(|(needle, _, _)| details.contains(needle))
        .map(|(_, limit, message)| (limit, message.to_string()))
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
mod tests {
    use super::*;
    use std::path::Path;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    fn four_shot() -> PromptFile {
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

    /// Render `template` (text form, one input `text`) and expect a limit error within a
    /// bounded time; returns the limit and the message.
    fn over_limit(template: &str, text: &str) -> (&'static str, String) {
        let p = PromptFile::from_template("heavy", template);
        let started = std::time::Instant::now();
        let e = p
            .render(&vars(&[("text", text)]), PromptFormat::Text, None)
            .unwrap_err();
        let took = started.elapsed();
        assert!(took.as_secs_f64() < 2.0, "{template}: took {took:?}");
        let message = e.to_string();
        match e {
            PromptError::Limit { limit, name, .. } => {
                assert_eq!(name, "heavy");
                assert!(message.contains("prompt `heavy`, `template`"), "{message}");
                (limit.as_str(), message)
            }
            other => panic!("{template}: expected a limit error, got {other}"),
        }
    }

    #[test]
    fn nested_loops_and_exponential_recursion_run_out_of_fuel() {
        for t in [
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}",
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
            // Heavy only on its input: a loop over the input's characters, cubed.
            "{% for a in text %}{% for b in text %}{% for c in text %}.{% endfor %}{% endfor %}{% endfor %}",
        ] {
            let (limit, message) = over_limit(t, &"y".repeat(500));
            assert_eq!(limit, "max_fuel", "{t}: {message}");
            assert!(
                message.contains("`[templates] max_fuel` = 2000000"),
                "{message}"
            );
        }
    }

    #[test]
    fn unbounded_recursion_and_oversized_ranges_are_limit_errors() {
        let (limit, _) = over_limit("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "");
        assert_eq!(limit, "recursion");
        let (limit, _) = over_limit("{% for i in range(100000000) %}x{% endfor %}", "");
        assert_eq!(limit, "range");
    }

    #[test]
    fn string_repetition_and_large_output_are_limit_errors() {
        let (limit, _) = over_limit("{{ 'x' * 1000000000 }}", "");
        assert_eq!(limit, "repetition");
        for t in [
            "{{ 'x' * 50000000 }}",
            "{% set s = 'x' * 5000000 %}{{ s ~ s }}",
            "{% for i in range(10) %}{{ text * 1000000 }}{% endfor %}",
        ] {
            let (limit, message) = over_limit(t, "y");
            assert_eq!(limit, "max_output_bytes", "{t}: {message}");
            assert!(
                message.contains("rendered prompt would be larger"),
                "{message}"
            );
        }
    }

    #[test]
    fn filters_that_multiply_are_refused_before_they_run() {
        for (t, filter) in [
            ("{{ range(100000)|join('x' * 1000) }}", "join"),
            ("{{ (range(100000) * 100000)|join }}", "join"),
            ("{{ (['x' * 10000000] * 1000)|join }}", "join"),
            ("{{ text|replace('', 'z' * 1000000) }}", "replace"),
            ("{{ text|indent(1000000000) }}", "indent"),
            ("{{ text|indent(width=1000000000) }}", "indent"),
            ("{{ '%999999999s'|format(text) }}", "format"),
            ("{{ [1]|batch(1000000000, 0)|list }}", "batch"),
            ("{{ (range(100000) * 100000)|sum }}", "sum"),
            ("{{ (range(100000) * 100000)|list|length }}", "list"),
        ] {
            let (limit, message) = over_limit(t, &"y\n".repeat(100));
            assert_eq!(limit, "max_output_bytes", "{t}: {message}");
            assert!(
                message.contains(&format!("`{filter}` would build"))
                    && message.contains("`[templates] max_output_bytes` = 8388608"),
                "{t}: {message}"
            );
        }
        // The checked filters still take their arguments and keywords as before.
        let p = PromptFile::from_template(
            "ok",
            "{{ text|indent(2, first=true) }}|{{ ['a', 'b']|join(', ') }}|{{ text|replace('a', 'o') }}|{{ '%s-%d'|format('x', 3) }}|{{ [3, 1, 2]|sort|join }}",
        );
        let r = p
            .render(&vars(&[("text", "a\nb")]), PromptFormat::Text, None)
            .unwrap();
        assert_eq!(r, Prompt::Text("  a\n  b|a, b|o\nb|x-3|123".into()));
    }

    #[test]
    fn limits_come_from_the_config_table() {
        let config: metaprompt_llm::config::TemplatesConfig =
            toml::from_str("max_fuel = 100\nmax_output_bytes = 10\ntimeout_secs = 0.5\n").unwrap();
        let limits = TemplateLimits::from_config(&config);
        assert_eq!(
            limits,
            TemplateLimits {
                max_fuel: 100,
                max_output_bytes: 10,
                timeout: Duration::from_millis(500),
            }
        );
        assert_eq!(
            TemplateLimits::from_config(&Default::default()),
            TemplateLimits::default()
        );
        let p = PromptFile::from_template("small", "{% for i in range(50) %}{% endfor %}");
        let e = p
            .render_demos_with(&BTreeMap::new(), PromptFormat::Text, None, &[], &limits)
            .unwrap_err();
        assert!(
            matches!(
                e,
                PromptError::Limit {
                    limit: Limit::Fuel,
                    ..
                }
            ),
            "{e}"
        );
        let p = PromptFile::from_template("small", "{{ 'x' * 11 }}");
        let e = p
            .render_demos_with(&BTreeMap::new(), PromptFormat::Text, None, &[], &limits)
            .unwrap_err();
        assert!(
            matches!(
                e,
                PromptError::Limit {
                    limit: Limit::OutputBytes,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn check_limits_renders_the_prompt_with_its_own_demonstrations() {
        let limits = TemplateLimits::default();
        four_shot().check_limits(&limits).unwrap();
        // Heavy on its own demonstrations: refused.
        let mut hostile = four_shot();
        hostile.demo_template = Some(
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{{ text }}{% endfor %}{% endfor %}{% endfor %}".into(),
        );
        let started = std::time::Instant::now();
        let e = hostile.check_limits(&limits).unwrap_err();
        assert!(started.elapsed().as_secs_f64() < 2.0);
        assert!(
            matches!(e, PromptError::Limit { ref field, demo: Some(0), limit: Limit::Fuel, .. } if field == "demo_template"),
            "{e}"
        );
        // Heavy on an input its demonstrations hold.
        let mut p = four_shot();
        p.template = Some("{% for a in text %}{% for b in text %}{% for c in text %}.{% endfor %}{% endfor %}{% endfor %}".into());
        p.demos[0].insert("text".into(), Value::String("y".repeat(400)));
        assert!(p.check_limits(&limits).is_err());
        // Heavy only on a long input: it passes (serving bounds each render).
        p.demos[0].insert("text".into(), Value::String("short".into()));
        p.check_limits(&limits).unwrap();
        // Heavy on its own, with no demonstrations or inputs.
        let e = PromptFile::from_template(
            "plain",
            "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}",
        )
        .check_limits(&limits)
        .unwrap_err();
        assert!(
            matches!(
                e,
                PromptError::Limit {
                    limit: Limit::Fuel,
                    ..
                }
            ),
            "{e}"
        );
        // A render error that is not a limit is not this check's business.
        PromptFile::from_template("attr", "{{ text.nope }}")
            .check_limits(&limits)
            .unwrap();
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
