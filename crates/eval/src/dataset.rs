//! Datasets: JSONL, CSV (with a header) and JSON arrays (or `{"examples": [...]}`, the BBH shape),
//! turned into [`Example`]s. A row that cannot be used is an error naming the file and line —
//! never silently dropped; so is a CSV header naming a column twice. A UTF-8 byte-order mark at
//! the start of a file is skipped, whatever the format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;

/// One example: its input variables and the expected output.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// `file:line` (or `file#index` for JSON arrays): where the example came from.
    pub id: String,
    pub vars: BTreeMap<String, Value>,
    pub expected: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Row {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How rows become examples.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// Template variable -> column. Columns not named keep their own name.
    pub fields: BTreeMap<String, String>,
    /// Variables every row must have.
    pub inputs: Vec<String>,
    /// The variable holding the expected output, if any.
    pub output: Option<String>,
}

/// File formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
    Json,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format, DatasetError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            Some("json") => Ok(Format::Json),
            _ => Err(DatasetError::File {
                path: path.to_path_buf(),
                message: "unknown dataset format: use a .jsonl, .csv or .json file".into(),
            }),
        }
    }
}

/// Load every row of a dataset file.
pub fn load(path: &Path, mapping: &Mapping) -> Result<Vec<Example>, DatasetError> {
    let file_err = |message: String| DatasetError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            return Err(row_err(
                path,
                line,
                format!("not valid UTF-8 (at byte offset {offset})"),
            ));
        }
    };
    // Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the data.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let rows: Vec<(usize, String, serde_json::Map<String, Value>)> = match Format::of(path)? {
        Format::Jsonl => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| match parse_strict(l) {
                Ok(Value::Object(o)) => Ok((i + 1, format!("{}:{}", path.display(), i + 1), o)),
                Ok(_) => Err(row_err(path, i + 1, "expected a JSON object".into())),
                Err(e) => Err(row_err(path, i + 1, format!("not valid JSON: {e}"))),
            })
            .collect::<Result<_, _>>()?,
        Format::Json => {
            let value: Value = parse_strict(text)
                .map_err(|e| row_err(path, e.line(), format!("not valid JSON: {e}")))?;
            let items = match value {
                Value::Array(items) => items,
                Value::Object(mut o) => match o.remove("examples") {
                    Some(Value::Array(items)) => items,
                    _ => {
                        return Err(file_err(
                            "expected a JSON array of objects, or {\"examples\": [...]}".into(),
                        ));
                    }
                },
                _ => {
                    return Err(file_err(
                        "expected a JSON array of objects, or {\"examples\": [...]}".into(),
                    ));
                }
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(o) => Ok((i, format!("{}#{i}", path.display()), o)),
                    _ => Err(file_err(format!("item {i} is not a JSON object"))),
                })
                .collect::<Result<_, _>>()?
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|e| file_err(format!("cannot read the header: {e}")))?
                .clone();
            // A column named twice would silently keep one of its values.
            for (i, h) in headers.iter().enumerate() {
                if headers.iter().take(i).any(|earlier| earlier == h) {
                    return Err(row_err(
                        path,
                        1,
                        format!("the header names the column `{h}` twice"),
                    ));
                }
            }
            reader
                .records()
                .map(|r| {
                    let r = r.map_err(|e| {
                        let line = e.position().map_or(0, |p| p.line() as usize);
                        row_err(path, line, e.to_string())
                    })?;
                    let line = r.position().map_or(0, |p| p.line() as usize);
                    let o = headers
                        .iter()
                        .zip(r.iter())
                        .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                        .collect();
                    Ok((line, format!("{}:{line}", path.display()), o))
                })
                .collect::<Result<_, _>>()?
        }
    };
    rows.into_iter()
        .map(|(line, id, row)| to_example(path, line, id, row, mapping))
        .collect()
}

/// Parse JSON, rejecting an object with the same key twice (at any depth) instead of keeping
/// the last value.
fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// A JSON value whose objects have no duplicate keys.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Strict(Value::Object(out)))
    }
}

fn row_err(path: &Path, line: usize, message: String) -> DatasetError {
    DatasetError::Row {
        path: path.to_path_buf(),
        line,
        message,
    }
}

fn to_example(
    path: &Path,
    line: usize,
    id: String,
    mut row: serde_json::Map<String, Value>,
    mapping: &Mapping,
) -> Result<Example, DatasetError> {
    let mut vars = BTreeMap::new();
    for (var, column) in &mapping.fields {
        match row.remove(column) {
            Some(v) => {
                vars.insert(var.clone(), v);
            }
            None => {
                return Err(row_err(
                    path,
                    line,
                    format!("no column `{column}` (mapped to variable `{var}`)"),
                ));
            }
        }
    }
    for (k, v) in row {
        vars.entry(k).or_insert(v);
    }
    for input in &mapping.inputs {
        match vars.get(input) {
            None => {
                return Err(row_err(
                    path,
                    line,
                    format!("missing input field `{input}`"),
                ));
            }
            Some(Value::Null) => {
                return Err(row_err(
                    path,
                    line,
                    format!("input field `{input}` is null"),
                ));
            }
            Some(_) => {}
        }
    }
    let expected = match &mapping.output {
        Some(out) => match vars.get(out) {
            Some(v) if !v.is_null() => Some(v.clone()),
            _ => {
                return Err(row_err(
                    path,
                    line,
                    format!("missing expected output field `{out}`"),
                ));
            }
        },
        None => None,
    };
    Ok(Example { id, vars, expected })
}

/// How far above 1 split ratios may sum (float rounding: 0.2 + 0.4 + 0.4 is not exactly 1).
pub const RATIO_EPSILON: f64 = 1e-9;

/// Split examples by ratios after a seeded shuffle. A ratio is the share of the examples its
/// split takes (the task checks each is in [0, 1] and that they sum to at most 1, never
/// rescaling them): when they sum to 1 every example lands in exactly one split, otherwise the
/// rest are in none.
pub fn split(
    mut examples: Vec<Example>,
    ratios: &[(String, f64)],
    seed: u64,
) -> BTreeMap<String, Vec<Example>> {
    examples.shuffle(&mut StdRng::seed_from_u64(seed));
    let total: f64 = ratios.iter().map(|(_, r)| r).sum();
    let whole = (total - 1.0).abs() <= RATIO_EPSILON;
    let n = examples.len();
    let mut out = BTreeMap::new();
    let mut start = 0;
    let mut acc = 0.0;
    for (i, (name, r)) in ratios.iter().enumerate() {
        acc += r.clamp(0.0, 1.0);
        let end = if whole && i + 1 == ratios.len() {
            n
        } else {
            ((acc * n as f64).round() as usize).min(n)
        };
        out.insert(name.clone(), examples[start..end.max(start)].to_vec());
        start = end.max(start);
    }
    out
}

/// At most `limit` examples: the first ones, or a seeded sample when `seed` is given.
pub fn take(mut examples: Vec<Example>, limit: Option<usize>, seed: Option<u64>) -> Vec<Example> {
    if let Some(seed) = seed {
        examples.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    if let Some(limit) = limit {
        examples.truncate(limit);
    }
    examples
}

/// Render a value the way a metric or a template sees it: strings as they are, anything else
/// as JSON.
/// The accepted answers of an expected output: each element of a list (any of them is right;
/// short-answer datasets ship several), else the value itself. Empty for an empty list.
pub fn accepted(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(as_text).collect(),
        other => vec![as_text(other)],
    }
}

/// The answer a demonstration shows for an expected output: the first accepted one.
pub fn first_answer(v: &Value) -> Value {
    match v {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    }
}

pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn mapping() -> Mapping {
        Mapping {
            fields: BTreeMap::new(),
            inputs: vec!["text".into()],
            output: Some("label".into()),
        }
    }

    #[test]
    fn loads_the_three_formats() {
        let dir = tempfile::tempdir().unwrap();
        let j = write(
            dir.path(),
            "a.jsonl",
            "{\"text\": \"good\", \"label\": \"positive\"}\n\n{\"text\": \"bad\", \"label\": \"negative\"}\n",
        );
        let c = write(
            dir.path(),
            "a.csv",
            "text,label\ngood,positive\n\"bad, really\",negative\n",
        );
        let a = write(
            dir.path(),
            "a.json",
            "{\"examples\": [{\"text\": \"good\", \"label\": \"positive\"}]}",
        );
        let ex = load(&j, &mapping()).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[1].id, format!("{}:3", j.display()));
        assert_eq!(ex[1].expected, Some(Value::String("negative".into())));
        let ex = load(&c, &mapping()).unwrap();
        assert_eq!(as_text(&ex[1].vars["text"]), "bad, really");
        assert_eq!(load(&a, &mapping()).unwrap().len(), 1);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let j = write(
            dir.path(),
            "b.jsonl",
            "{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"broken\"\n",
        );
        let e = load(&j, &mapping()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2: not valid JSON", j.display())),
            "{e}"
        );
        let j = write(
            dir.path(),
            "c.jsonl",
            "{\"text\": \"ok\", \"label\": \"x\"}\n{\"txt\": \"typo\", \"label\": \"y\"}\n",
        );
        let e = load(&j, &mapping()).unwrap_err().to_string();
        assert!(e.contains("c.jsonl:2: missing input field `text`"), "{e}");
        let j = write(dir.path(), "d.jsonl", "[1, 2]\n");
        assert!(
            load(&j, &mapping())
                .unwrap_err()
                .to_string()
                .contains("d.jsonl:1: expected a JSON object")
        );
        let c = write(dir.path(), "e.csv", "text,label\ngood,positive\nbad\n");
        let e = load(&c, &mapping()).unwrap_err().to_string();
        assert!(e.contains("e.csv:3:"), "{e}");
        let e = load(&write(dir.path(), "f.txt", "x"), &mapping())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown dataset format"), "{e}");
        let j = write(dir.path(), "g.jsonl", "{\"text\": \"ok\"}\n");
        assert!(
            load(&j, &mapping())
                .unwrap_err()
                .to_string()
                .contains("g.jsonl:1: missing expected output field `label`")
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let j = write(
            dir.path(),
            "dup.jsonl",
            "{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"a\", \"label\": \"x\", \"text\": \"b\"}\n",
        );
        let e = load(&j, &mapping()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2:", j.display())) && e.contains("duplicate key `text`"),
            "{e}"
        );
        let a = write(
            dir.path(),
            "dup.json",
            "[\n{\"text\": \"a\",\n \"label\": \"x\",\n \"label\": \"y\"}\n]",
        );
        let e = load(&a, &mapping()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:4:", a.display())) && e.contains("duplicate key `label`"),
            "{e}"
        );
    }

    #[test]
    fn invalid_utf8_names_file_line_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.jsonl");
        std::fs::write(
            &p,
            b"{\"text\": \"ok\", \"label\": \"x\"}\n{\"text\": \"\xff\"}\n",
        )
        .unwrap();
        let e = load(&p, &mapping()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2: not valid UTF-8", p.display()))
                && e.contains("byte offset 39"),
            "{e}"
        );
    }

    #[test]
    fn field_mapping_renames_columns() {
        let dir = tempfile::tempdir().unwrap();
        let j = write(
            dir.path(),
            "m.jsonl",
            "{\"sentence\": \"fine\", \"y\": 1}\n",
        );
        let m = Mapping {
            fields: BTreeMap::from([
                ("text".into(), "sentence".into()),
                ("label".into(), "y".into()),
            ]),
            inputs: vec!["text".into()],
            output: Some("label".into()),
        };
        let ex = load(&j, &m).unwrap();
        assert_eq!(as_text(&ex[0].vars["text"]), "fine");
        assert_eq!(ex[0].expected, Some(serde_json::json!(1)));
        let m = Mapping {
            fields: BTreeMap::from([("text".into(), "body".into())]),
            ..Mapping::default()
        };
        assert!(
            load(&j, &m)
                .unwrap_err()
                .to_string()
                .contains("no column `body`")
        );
    }

    #[test]
    fn a_csv_header_naming_a_column_twice_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = write(
            dir.path(),
            "dup.csv",
            "text,label,text\ngood,positive,bad\n",
        );
        let e = load(&c, &mapping()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:1: the header names the column `text` twice",
                c.display()
            )
        );
        // Case differs: two columns.
        let c = write(dir.path(), "case.csv", "text,label,Text\ngood,positive,x\n");
        assert_eq!(load(&c, &mapping()).unwrap().len(), 1);
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            (
                "bom.jsonl",
                "\u{feff}{\"text\": \"good\", \"label\": \"positive\"}\n{\"text\": \"bad\", \"label\": \"negative\"}\n",
            ),
            (
                "bom.json",
                "\u{feff}[{\"text\": \"good\", \"label\": \"positive\"}, {\"text\": \"bad\", \"label\": \"negative\"}]",
            ),
            (
                "bom.csv",
                "\u{feff}text,label\ngood,positive\nbad,negative\n",
            ),
        ] {
            let p = write(dir.path(), name, text);
            let ex = load(&p, &mapping()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ex.len(), 2, "{name}");
            assert_eq!(as_text(&ex[0].vars["text"]), "good", "{name}");
        }
        // Only at the start: inside a line it is data (and JSON rejects it there).
        let p = write(
            dir.path(),
            "mid.jsonl",
            "{\"text\": \"ok\", \"label\": \"x\"}\n\u{feff}{\"text\": \"ok\", \"label\": \"x\"}\n",
        );
        let e = load(&p, &mapping()).unwrap_err().to_string();
        assert!(e.contains("mid.jsonl:2: not valid JSON"), "{e}");
    }

    #[test]
    fn ratios_are_shares_never_rescaled() {
        let ex: Vec<Example> = (0..10)
            .map(|i| Example {
                id: i.to_string(),
                vars: BTreeMap::new(),
                expected: None,
            })
            .collect();
        // Summing to less than 1: the rest is in no split (not spread over the others).
        let s = split(
            ex.clone(),
            &[("dev".to_string(), 0.2), ("test".to_string(), 0.3)],
            1,
        );
        assert_eq!((s["dev"].len(), s["test"].len()), (2, 3));
        // A zero ratio: an empty split.
        let s = split(
            ex,
            &[("dev".to_string(), 1.0), ("train".to_string(), 0.0)],
            1,
        );
        assert_eq!((s["dev"].len(), s["train"].len()), (10, 0));
    }

    #[test]
    fn seeded_split_covers_everything_once() {
        let ex: Vec<Example> = (0..10)
            .map(|i| Example {
                id: i.to_string(),
                vars: BTreeMap::new(),
                expected: None,
            })
            .collect();
        let ratios = vec![
            ("train".to_string(), 0.6),
            ("dev".to_string(), 0.2),
            ("test".to_string(), 0.2),
        ];
        let s = split(ex.clone(), &ratios, 1);
        assert_eq!(
            (s["train"].len(), s["dev"].len(), s["test"].len()),
            (6, 2, 2)
        );
        let mut ids: Vec<String> = s.values().flatten().map(|e| e.id.clone()).collect();
        ids.sort();
        assert_eq!(ids.len(), 10);
        ids.dedup();
        assert_eq!(ids.len(), 10);
        assert_eq!(split(ex, &ratios, 1)["dev"], s["dev"], "seeded");
    }
}
