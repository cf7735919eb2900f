//! What goes wrong with a prompt file, in words that name the file, the field, the line and
//! the variable: [`PromptError`], and minijinja's errors reworded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use minijinja::Environment;
use serde_json::Value;

use super::*;

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
    /// The prompt cannot be written as a prompt file (TOML has no null: a demonstration
    /// whose field is null, from a dataset row with a null value).
    #[error("prompt `{name}` cannot be written as a prompt file: {message}")]
    Unwritable { name: String, message: String },
}

/// A minijinja error without its `<string>` noise: what went wrong, the line and its text.
pub(super) fn describe(e: &minijinja::Error, source: &str) -> String {
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
pub(super) fn render_error(
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
pub(super) fn undefined_attribute(
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
    use crate::prompt::tests::vars;
    use std::path::Path;

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
}
