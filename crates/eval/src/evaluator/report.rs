//! What an evaluation produces: each example's result, the summary `eval` prints, the report
//! (written as JSON lines), and the words for why an example is unscored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use metaprompt_llm::Usage;
use serde::Serialize;
use serde_json::Value;

use crate::dataset::Example;
use crate::metric::Score;
use crate::stats::Estimate;

/// One example's result: a JSONL line of the per-example file.
#[derive(Debug, Clone, Serialize)]
pub struct ExampleResult {
    pub id: String,
    pub input: BTreeMap<String, Value>,
    pub output: String,
    pub expected: Option<Value>,
    /// `None`: unscored (the model call or a metric failed; `error` says why). Never read an
    /// unscored example as 0.
    pub score: Option<f64>,
    /// Whether every metric passed its threshold; `None` when unscored.
    pub passed: Option<bool>,
    pub scores: BTreeMap<String, Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Label distribution, when labels were scored instead of generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_probs: Option<BTreeMap<String, f64>>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub cached: bool,
    /// Why the example is unscored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExampleResult {
    /// The result of an example that could not be scored, and why.
    pub fn unscored(example: &Example, inputs: BTreeMap<String, Value>, why: String) -> Self {
        Self {
            id: example.id.clone(),
            input: inputs,
            output: String::new(),
            expected: example.expected.clone(),
            score: None,
            passed: None,
            scores: BTreeMap::new(),
            feedback: None,
            label_probs: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: Some(0.0),
            latency_ms: 0,
            cached: false,
            error: Some(why),
        }
    }

    pub fn is_scored(&self) -> bool {
        self.score.is_some()
    }
}

/// What `eval` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub prompt: String,
    pub model: String,
    /// Examples evaluated, scored or not.
    pub examples: usize,
    /// Over the scored examples only (`score.n` of them).
    pub score: Estimate,
    /// Over the scored examples only.
    pub pass_rate: f64,
    /// Unscored examples: the model call or a metric failed (left out of `score` and
    /// `pass_rate`).
    pub errors: usize,
    /// Why the first unscored example is unscored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub cached: usize,
    pub usage: Usage,
    /// `None` when some call's cost is unknown.
    pub cost_usd: Option<f64>,
    #[serde(with = "secs")]
    pub wall: Duration,
    pub mode: &'static str,
}

impl Summary {
    /// Examples scored: 0 means there is no score at all (never read `score` then).
    pub fn scored(&self) -> usize {
        self.score.n
    }
}

/// `e`'s message, followed by its root cause (the innermost `source()`) unless the message
/// already says it.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    metaprompt_llm::error::with_root_cause(e)
}

/// `text` in at most about `max` characters, for a summary line: whole when it fits, else its
/// start and its end joined by ` … `, each cut between words, never inside one. Messages here
/// name their causes last (`outer: inner: root cause`), so the end kept is the root cause: the
/// whole last `: ` part when it fits in two thirds of `max`.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    let len = text.chars().count();
    if len <= max {
        return text.to_string();
    }
    let cause = text
        .rfind(": ")
        .map(|i| text[i + 2..].chars().count())
        .filter(|&n| n <= max * 2 / 3)
        .unwrap_or(0);
    let tail = last_words(text, cause.max(max / 3));
    let room = max.saturating_sub(tail.chars().count() + 3);
    let head = first_words(text, room);
    match (head.is_empty(), tail.is_empty()) {
        (false, false) => format!("{head} … {tail}"),
        (false, true) => format!("{head} …"),
        (true, false) => format!("… {tail}"),
        // One word longer than `max`: cut it rather than show nothing.
        (true, true) => format!("{}…", text.chars().take(max).collect::<String>()),
    }
}

/// The longest start of `text` of at most `n` characters that ends between words.
fn first_words(text: &str, n: usize) -> &str {
    let Some((end, next)) = text.char_indices().nth(n) else {
        return text;
    };
    let cut = if next.is_whitespace() {
        end
    } else {
        text[..end].rfind(char::is_whitespace).unwrap_or(0)
    };
    text[..cut].trim_end()
}

/// The longest end of `text` of at most `n` characters that starts between words.
fn last_words(text: &str, n: usize) -> &str {
    let len = text.chars().count();
    if n >= len {
        return text;
    }
    let Some((start, _)) = text.char_indices().nth(len - n) else {
        return "";
    };
    let before = text[..start].chars().next_back();
    let cut = if before.is_some_and(char::is_whitespace) {
        start
    } else {
        text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |i| start + i)
    };
    text[cut..].trim_start()
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub summary: Summary,
    pub results: Vec<ExampleResult>,
}

impl Report {
    /// The scores of the scored examples (unscored ones left out).
    pub fn scores(&self) -> Vec<f64> {
        self.results.iter().filter_map(|r| r.score).collect()
    }

    /// Pass/fail of the scored examples (unscored ones left out).
    pub fn passes(&self) -> Vec<bool> {
        self.results.iter().filter_map(|r| r.passed).collect()
    }

    /// Write one JSON line per example.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for r in &self.results {
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}
