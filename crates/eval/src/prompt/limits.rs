//! What one render may cost ([`TemplateLimits`], `[templates]` in the config): template steps
//! per field (minijinja fuel), the size of the rendered prompt ([`Bounded`]), and the size of any
//! string or list a filter builds on the way (`join`, `replace`, `indent`, `format`, … checked
//! before they run, [`limited_environment`]). minijinja itself refuses `range()` over 100,000
//! items, string repetition over 100 MB and macro recursion deeper than 500 levels;
//! [`over_limit`] names whichever was hit. [`PromptFile::check_limits`] is the check the library
//! makes before it stores a version.
//!
//! Not bounded: memory built by concatenation (`~`, `+`) of strings or lists, which minijinja
//! runs without a hook; a template that doubles a string in a loop reaches gigabytes in a few
//! dozen steps. Such a version can only be added by an `editor` (see README, Security model).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use minijinja::value::{Rest, Value as JinjaValue};
use minijinja::{Environment, ErrorKind, State};
use serde_json::Value;
use std::collections::BTreeMap;

use metaprompt_llm::PromptFormat;

use super::{PromptError, PromptFile, environment};

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
}

/// The environment renders use: [`environment`] with fuel, and the filters that build strings
/// or lists checked against `max_output_bytes` before and after they run (the flag says one
/// refused).
pub(super) fn limited_environment(
    limits: &TemplateLimits,
) -> (Environment<'static>, Arc<AtomicBool>) {
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
pub(super) struct Bounded {
    pub(super) buf: Vec<u8>,
    pub(super) left: u64,
    pub(super) over: bool,
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
pub(super) fn over_limit(
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

#[cfg(test)]
mod tests {
    use super::*;
    use metaprompt_llm::Prompt;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
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
        super::super::tests::four_shot()
            .check_limits(&limits)
            .unwrap();
        // Heavy on its own demonstrations: refused.
        let mut hostile = super::super::tests::four_shot();
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
        let mut p = super::super::tests::four_shot();
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
}
