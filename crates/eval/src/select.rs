//! Per-input demonstrations: a prompt with a `[selector]` shows each example the `k` entries of
//! its `[[pool]]` nearest to it, instead of one fixed set of demos.
//!
//! ```toml
//! [selector]
//! kind = "knn"
//! k = 4
//! by = ["sentence"]   # the input fields compared (default: the variables the template uses)
//! embed = "model"     # the execution model's embeddings (default), or "words"
//! [[pool]]
//! sentence = "a gorgeous, witty, seductive movie."
//! label = "positive"
//! ```
//!
//! - `embed = "model"`: the execution model's mean-pooled hidden states
//!   ([`Provider::embed`]; the embedded model has them, HTTP chat models do not). Hidden states
//!   of a language model all point one way (cosines near 0.9), so vectors are centred on the
//!   pool's mean before comparing.
//! - `embed = "words"`: TF-IDF over lower-cased words, idf from the pool; no model call, so
//!   [`PromptFile::render`] can pick by itself.
//!
//! The picked demonstrations are shown farthest first, so the nearest one sits next to the
//! example; ties go to the earlier pool entry. The same file renders the same way in an
//! evaluation, an optimization and the prompt service, because they all render through
//! [`render_all`].

use std::collections::{BTreeMap, HashMap};

use metaprompt_llm::{Prompt, PromptFormat, Provider};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::prompt::{PromptError, PromptFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorKind {
    /// The `k` nearest pool entries.
    Knn,
}

/// What inputs are compared by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embedding {
    /// The execution model's embeddings.
    #[default]
    Model,
    /// TF-IDF over words (no model).
    Words,
}

impl Embedding {
    pub fn as_str(self) -> &'static str {
        match self {
            Embedding::Model => "model",
            Embedding::Words => "words",
        }
    }
}

/// How a prompt picks each example's demonstrations from its pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub kind: SelectorKind,
    /// Demonstrations per example.
    pub k: usize,
    /// The input fields compared; empty: the variables the example's templates use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
    #[serde(default)]
    pub embed: Embedding,
}

impl Selector {
    pub fn knn(k: usize, embed: Embedding) -> Self {
        Self {
            kind: SelectorKind::Knn,
            k,
            by: Vec::new(),
            embed,
        }
    }

    /// What serde cannot check: a pool to pick from, `k` within it, compared fields present.
    pub(crate) fn validate(&self, prompt: &PromptFile) -> Result<(), String> {
        if self.k == 0 {
            return Err("`selector.k` must be at least 1".into());
        }
        if prompt.pool.is_empty() {
            return Err("a `[selector]` picks from `[[pool]]`, which is empty".into());
        }
        if !prompt.demos.is_empty() {
            return Err(
                "a prompt with a `[selector]` takes its demonstrations from `[[pool]]`; move its `[[demos]]` there".into(),
            );
        }
        if prompt.demo_template.is_none() && prompt.template.is_some() {
            return Err("`[[pool]]` in text form needs a `demo_template`".into());
        }
        if self.k > prompt.pool.len() {
            return Err(format!(
                "`selector.k` = {} but `[[pool]]` holds {} entr{}",
                self.k,
                prompt.pool.len(),
                if prompt.pool.len() == 1 { "y" } else { "ies" }
            ));
        }
        let fields = self.fields(prompt);
        if fields.is_empty() {
            return Err(format!(
                "the selector compares no field: none of the prompt's variables ({}) is in `pool[0]`; set `selector.by`",
                prompt.variables().join(", ")
            ));
        }
        for (i, entry) in prompt.pool.iter().enumerate() {
            if let Some(missing) = fields.iter().find(|f| !entry.contains_key(*f)) {
                return Err(format!(
                    "`pool[{i}]` has no `{missing}` (the selector compares {})",
                    fields
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The fields compared: `by`, else the template variables the first pool entry has.
    pub fn fields(&self, prompt: &PromptFile) -> Vec<String> {
        if !self.by.is_empty() {
            return self.by.clone();
        }
        let first = prompt.pool.first();
        prompt
            .variables()
            .into_iter()
            .filter(|v| first.is_some_and(|e| e.contains_key(v)))
            .collect()
    }

    /// Pick by words, without a model; an error for a selector that compares embeddings.
    pub(crate) fn pick_by_words(
        &self,
        prompt: &PromptFile,
        inputs: &[BTreeMap<String, Value>],
    ) -> Result<Vec<Vec<usize>>, PromptError> {
        if self.embed != Embedding::Words {
            return Err(select_error(
                prompt,
                "this prompt compares inputs by the model's embeddings, so it renders only with a model (through `select::render_all`)".into(),
            ));
        }
        let fields = self.fields(prompt);
        let pool: Vec<String> = prompt.pool.iter().map(|e| text_of(&fields, e)).collect();
        let queries: Vec<String> = inputs.iter().map(|v| text_of(&fields, v)).collect();
        let index = Tfidf::new(&pool);
        let pool_vectors: Vec<Vec<f32>> = pool.iter().map(|t| index.dense(t)).collect();
        Ok(queries
            .iter()
            .map(|q| nearest(&pool_vectors, &index.dense(q), self.k))
            .collect())
    }

    /// Pick each input's demonstrations (pool indices, farthest first).
    pub async fn pick(
        &self,
        prompt: &PromptFile,
        model: &dyn Provider,
        inputs: &[BTreeMap<String, Value>],
    ) -> Result<Vec<Vec<usize>>, PromptError> {
        if self.embed == Embedding::Words {
            return self.pick_by_words(prompt, inputs);
        }
        if !model.can_embed() {
            return Err(select_error(
                prompt,
                format!(
                    "`{}` cannot embed texts (`embed = \"model\"` needs a model that can, such as an embedded `local:` one); use `embed = \"words\"`",
                    model.info().name
                ),
            ));
        }
        let fields = self.fields(prompt);
        let mut texts: Vec<String> = prompt.pool.iter().map(|e| text_of(&fields, e)).collect();
        texts.extend(inputs.iter().map(|v| text_of(&fields, v)));
        let mut vectors = model.embed(&texts).await.map_err(|e| {
            select_error(
                prompt,
                format!("`{}` could not embed: {e}", model.info().name),
            )
        })?;
        if vectors.len() != texts.len() {
            return Err(select_error(
                prompt,
                format!(
                    "`{}` gave {} embeddings for {} texts",
                    model.info().name,
                    vectors.len(),
                    texts.len()
                ),
            ));
        }
        let queries = vectors.split_off(prompt.pool.len());
        let mut pool = vectors;
        let mean = mean_of(&pool);
        pool.iter_mut().for_each(|v| centre(v, &mean));
        Ok(queries
            .into_iter()
            .map(|mut q| {
                centre(&mut q, &mean);
                nearest(&pool, &q, self.k)
            })
            .collect())
    }
}

fn select_error(prompt: &PromptFile, message: String) -> PromptError {
    PromptError::Select {
        name: prompt.name.clone(),
        path: prompt.source.0.clone(),
        message,
    }
}

/// Render `prompt` for each of `inputs` (an example's variables without its expected output)
/// for `model`, picking each one's demonstrations when the prompt has a selector. Every
/// evaluation and the prompt service render through here.
pub async fn render_all(
    prompt: &PromptFile,
    model: &dyn Provider,
    inputs: &[BTreeMap<String, Value>],
    format: PromptFormat,
    output: Option<&str>,
) -> Result<Vec<Prompt>, PromptError> {
    let Some(selector) = &prompt.selector else {
        return inputs
            .iter()
            .map(|v| prompt.render(v, format, output))
            .collect();
    };
    let picks = selector.pick(prompt, model, inputs).await?;
    inputs
        .iter()
        .zip(picks)
        .map(|(vars, picked)| {
            let demos: Vec<&BTreeMap<String, Value>> =
                picked.iter().map(|&i| &prompt.pool[i]).collect();
            prompt.render_demos(vars, format, output, &demos)
        })
        .collect()
}

/// The compared fields' values, one per line.
fn text_of(fields: &[String], vars: &BTreeMap<String, Value>) -> String {
    fields
        .iter()
        .filter_map(|f| vars.get(f))
        .map(crate::dataset::as_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `k` vectors with the largest dot product with `query`, farthest first (ties: the earlier
/// entry is nearer).
fn nearest(pool: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = pool
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut picked: Vec<usize> = scored.into_iter().take(k).map(|(i, _)| i).collect();
    picked.reverse();
    picked
}

fn mean_of(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dims = vectors.first().map_or(0, Vec::len);
    let mut mean = vec![0.0f32; dims];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x;
        }
    }
    let n = vectors.len().max(1) as f32;
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

/// Subtract `mean` and scale back to unit length (a zero vector stays zero).
fn centre(v: &mut [f32], mean: &[f32]) {
    for (x, m) in v.iter_mut().zip(mean) {
        *x -= m;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// TF-IDF vectors over a pool's vocabulary (words outside it do not count).
struct Tfidf {
    column: HashMap<String, usize>,
    idf: Vec<f32>,
}

impl Tfidf {
    fn new(pool: &[String]) -> Self {
        let mut column = HashMap::new();
        let mut df: Vec<f32> = Vec::new();
        for text in pool {
            let mut seen = std::collections::HashSet::new();
            for w in words(text) {
                if seen.insert(w.clone()) {
                    let next = column.len();
                    let c = *column.entry(w).or_insert(next);
                    if c == df.len() {
                        df.push(0.0);
                    }
                    df[c] += 1.0;
                }
            }
        }
        let n = pool.len() as f32;
        let idf = df
            .iter()
            .map(|d| ((n + 1.0) / (d + 1.0)).ln() + 1.0)
            .collect();
        Self { column, idf }
    }

    fn dense(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.idf.len()];
        for w in words(text) {
            if let Some(&c) = self.column.get(&w) {
                v[c] += self.idf[c];
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metaprompt_llm::testing::ScriptedProvider;

    fn entry(q: &str, a: &str) -> BTreeMap<String, Value> {
        [("question", q), ("answer", a)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.into())))
            .collect()
    }

    fn knn(k: usize, embed: Embedding) -> PromptFile {
        let mut p = PromptFile::from_template("qa", "Q: {{ question }}\nA:");
        p.demo_template = Some("Q: {{ question }}\nA: {{ answer }}\n\n".into());
        p.selector = Some(Selector::knn(k, embed));
        p.pool = vec![
            entry("what is the capital of france", "paris"),
            entry("who wrote hamlet", "shakespeare"),
            entry("what is the capital of italy", "rome"),
            entry("how many legs does a spider have", "eight"),
        ];
        p.validate().unwrap();
        p
    }

    fn input(q: &str) -> BTreeMap<String, Value> {
        [("question".to_string(), Value::String(q.into()))].into()
    }

    fn text(p: Prompt) -> String {
        match p {
            Prompt::Text(t) => t,
            Prompt::Chat(_) => panic!("text form expected"),
        }
    }

    #[test]
    fn words_pick_the_nearest_entries_nearest_last() {
        let p = knn(2, Embedding::Words);
        let t = text(
            p.render(
                &input("what is the capital of spain"),
                PromptFormat::Text,
                Some("answer"),
            )
            .unwrap(),
        );
        assert!(t.contains("paris") && t.contains("rome"), "{t}");
        assert!(!t.contains("hamlet") && !t.contains("spider"), "{t}");
        let t = text(
            p.render(
                &input("how many legs does a cat have"),
                PromptFormat::Text,
                Some("answer"),
            )
            .unwrap(),
        );
        let spider = t.find("spider").unwrap();
        let last_demo = t.rfind("Q: ").unwrap();
        assert!(spider > t.find("Q: ").unwrap(), "{t}");
        assert!(
            t[..last_demo].contains("spider"),
            "the nearest demo is last: {t}"
        );
        assert!(t.ends_with("Q: how many legs does a cat have\nA:"), "{t}");
    }

    #[tokio::test]
    async fn model_embeddings_pick_through_the_provider_and_render_all() {
        let p = knn(1, Embedding::Model);
        let model = ScriptedProvider::new("m");
        let inputs = [input("who wrote macbeth"), input("capital of france")];
        let rendered = render_all(&p, &model, &inputs, PromptFormat::Text, Some("answer"))
            .await
            .unwrap();
        let rendered: Vec<String> = rendered.into_iter().map(text).collect();
        assert!(rendered[0].contains("shakespeare"), "{}", rendered[0]);
        assert!(rendered[1].contains("paris"), "{}", rendered[1]);
        assert_eq!(
            model.embed_calls().len(),
            p.pool.len() + inputs.len(),
            "the pool and each input, in one call"
        );
        // Rendered alone, a model-embedding prompt says what it needs.
        let e = p
            .render(&inputs[0], PromptFormat::Text, Some("answer"))
            .unwrap_err();
        assert!(e.to_string().contains("renders only with a model"), "{e}");
    }

    #[tokio::test]
    async fn a_model_that_cannot_embed_is_a_clear_error() {
        #[derive(Debug)]
        struct Plain(metaprompt_llm::ModelInfo);
        #[async_trait::async_trait]
        impl Provider for Plain {
            fn info(&self) -> &metaprompt_llm::ModelInfo {
                &self.0
            }
            async fn complete(
                &self,
                _: &metaprompt_llm::Request,
            ) -> Result<metaprompt_llm::Response, metaprompt_llm::LlmError> {
                unreachable!("no completion is needed to pick")
            }
        }
        let model = Plain(metaprompt_llm::ModelInfo::new(
            metaprompt_llm::ProviderKind::Openai,
            "gpt-x",
        ));
        let e = render_all(
            &knn(1, Embedding::Model),
            &model,
            &[input("q")],
            PromptFormat::Text,
            None,
        )
        .await
        .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("cannot embed") && e.contains("embed = \"words\""),
            "{e}"
        );
    }

    #[test]
    fn bad_selectors_name_the_field() {
        type Change = Box<dyn Fn(&mut PromptFile)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|p| p.selector.as_mut().unwrap().k = 0),
                "`selector.k` must be at least 1",
            ),
            (
                Box::new(|p| p.selector.as_mut().unwrap().k = 9),
                "`selector.k` = 9 but `[[pool]]` holds 4 entries",
            ),
            (
                Box::new(|p| p.pool.clear()),
                "picks from `[[pool]]`, which is empty",
            ),
            (
                Box::new(|p| p.demos = p.pool.clone()),
                "move its `[[demos]]` there",
            ),
            (
                Box::new(|p| {
                    p.pool[2].remove("question");
                }),
                "`pool[2]` has no `question`",
            ),
            (
                Box::new(|p| p.selector.as_mut().unwrap().by = vec!["topic".into()]),
                "`pool[0]` has no `topic`",
            ),
            (
                Box::new(|p| p.selector = None),
                "`[[pool]]` is read only by a `[selector]`",
            ),
            (
                Box::new(|p| p.demo_template = None),
                "`[[pool]]` in text form needs a `demo_template`",
            ),
        ];
        for (change, expected) in cases {
            let mut p = knn(2, Embedding::Words);
            change(&mut p);
            let e = p.validate().unwrap_err();
            assert!(e.contains(expected), "{e}\nexpected: {expected}");
        }
        // From a file: unknown selector kinds and fields are refused with their place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "template = \"{{ q }}\"\ndemo_template = \"{{ q }} {{ a }}\"\n[selector]\nkind = \"random\"\nk = 1\n[[pool]]\nq = \"x\"\na = \"y\"\n",
        )
        .unwrap();
        let e = PromptFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("p.toml") && e.contains("random") && e.contains("knn"),
            "{e}"
        );
    }

    #[test]
    fn the_longest_form_shows_the_k_longest_pool_entries() {
        let p = knn(2, Embedding::Model);
        let longest = p.longest();
        assert!(longest.selector.is_none() && longest.pool.is_empty());
        let questions: Vec<&str> = longest
            .demos
            .iter()
            .map(|d| d["question"].as_str().unwrap())
            .collect();
        assert_eq!(
            questions,
            [
                "how many legs does a spider have",
                "what is the capital of france"
            ]
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let p = knn(3, Embedding::Words);
        let back: PromptFile = toml::from_str(&p.to_toml().unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(
            p.to_toml().unwrap().contains("[selector]"),
            "{}",
            p.to_toml().unwrap()
        );
    }
}
