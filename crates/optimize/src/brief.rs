//! What the meta layer is told about a task ([`Brief`]), and the parts of a prompt that come
//! from the data rather than from the meta model ([`Frame`]: how one example is laid out, the
//! demonstrations). A candidate prompt is a frame plus an instruction the meta model wrote.

use std::collections::BTreeMap;

use metaprompt_eval::dataset::{as_text, first_answer};
use metaprompt_eval::metric::MetricKind;
use metaprompt_eval::prompt::MessageTemplate;
use metaprompt_eval::{Example, PromptFile, Task};
use metaprompt_llm::{ModelInfo, PromptFormat, Role};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};

/// A task as the meta-prompts see it.
#[derive(Debug, Clone, Serialize)]
pub struct Brief {
    pub name: String,
    pub description: String,
    pub inputs: Vec<String>,
    pub output: String,
    /// The allowed answers of a classification (`choice` metric), else empty.
    pub labels: Vec<String>,
}

impl Brief {
    pub fn from_task(task: &Task) -> Self {
        let c = &task.config;
        let labels = c
            .metrics
            .iter()
            .find(|m| m.kind() == MetricKind::Choice)
            .and_then(|m| m.labels().map(<[String]>::to_vec))
            .unwrap_or_default();
        Self {
            name: c.name.clone(),
            description: c.description.clone(),
            inputs: c.inputs.clone(),
            output: c.output.clone(),
            labels,
        }
    }

    /// A task known only by its description: one input, free-text output.
    pub fn from_description(description: &str) -> Self {
        Self {
            name: slug(description),
            description: description.trim().to_string(),
            inputs: vec!["input".into()],
            output: "output".into(),
            labels: Vec::new(),
        }
    }

    /// An example as one line for a meta-prompt: the input (`field: value` pairs when there are
    /// several) and the expected output.
    pub fn show(&self, example: &Example) -> Value {
        let input = if self.inputs.len() == 1 {
            example
                .vars
                .get(&self.inputs[0])
                .map(as_text)
                .unwrap_or_default()
        } else {
            self.inputs
                .iter()
                .filter_map(|i| example.vars.get(i).map(|v| format!("{i}: {}", as_text(v))))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let output = example
            .expected
            .as_ref()
            .or_else(|| example.vars.get(&self.output))
            .map(|v| as_text(&first_answer(v)))
            .unwrap_or_default();
        json!({"input": one_line(&input), "output": one_line(&output)})
    }
}

/// A model as the meta-prompts see it (`target`).
pub fn model_context(info: &ModelInfo) -> Value {
    json!({
        "name": info.name,
        "format": match info.format { PromptFormat::Chat => "chat", PromptFormat::Text => "text" },
        "provider": info.provider,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A file-name-friendly name from free text.
pub fn slug(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(6)
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        "prompt".into()
    } else {
        words.join("-")
    }
}

fn title(field: &str) -> String {
    let spaced = field.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Up to `k` demonstrations from `pool`: for a classification, the labels take turns (so no
/// label dominates, the failure measured for DSPy's bootstrap on this model); otherwise a seeded
/// sample. Each demo holds the input fields and the output field.
pub fn pick_demos(brief: &Brief, pool: &[Example], k: usize, seed: u64) -> Vec<Example> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut shuffled: Vec<&Example> = pool.iter().collect();
    shuffled.shuffle(&mut rng);
    let expected = |e: &Example| {
        e.expected
            .as_ref()
            .map(|v| as_text(&first_answer(v)))
            .unwrap_or_default()
    };
    let picked: Vec<&Example> = if brief.labels.is_empty() {
        shuffled.into_iter().take(k).collect()
    } else {
        let mut queues: Vec<Vec<&Example>> = brief
            .labels
            .iter()
            .map(|l| {
                shuffled
                    .iter()
                    .copied()
                    .filter(|e| expected(e).trim() == l)
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        while out.len() < k && queues.iter().any(|q| !q.is_empty()) {
            for q in &mut queues {
                if out.len() < k && !q.is_empty() {
                    out.push(q.remove(0));
                }
            }
        }
        out
    };
    picked.into_iter().cloned().collect()
}

/// The data-given parts of a prompt.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The example, text form (ends with the answer cue, e.g. `Sentiment:`).
    pub template: String,
    /// One demonstration, text form.
    pub demo_template: String,
    /// The example as a user message, chat form.
    pub user: String,
    pub demos: Vec<BTreeMap<String, Value>>,
    /// A prompt that picks its demonstrations per input keeps its selector and pool through
    /// every rewrite. A frame given fixed `demos` makes a prompt with those instead.
    pub selector: Option<metaprompt_eval::select::Selector>,
    pub pool: Vec<BTreeMap<String, Value>>,
    /// How the prompt runs when it has its own `[run]` (a worked-answer form: room for the
    /// working, the answer read after its marker): every rewrite keeps it.
    pub run: Option<metaprompt_eval::settings::RunSettings>,
}

impl Frame {
    /// The layout of a prompt written from scratch: `Field: {{ field }}` lines and an answer cue.
    pub fn fresh(brief: &Brief) -> Self {
        let lines: String = brief
            .inputs
            .iter()
            .map(|i| format!("{}: {{{{ {i} }}}}\n", title(i)))
            .collect();
        let template = format!("{lines}{}:", title(&brief.output));
        Self {
            demo_template: format!("{template} {{{{ {} }}}}\n\n", brief.output),
            user: template.clone(),
            template,
            demos: Vec::new(),
            selector: None,
            pool: Vec::new(),
            run: None,
        }
    }

    /// The layout of an existing prompt, completed to both forms: a chat-only prompt gets a
    /// text template (its user message plus an answer cue), a text-only one a user message.
    pub fn of(prompt: &PromptFile, brief: &Brief) -> Self {
        let fresh = Self::fresh(brief);
        let last_user = prompt.messages.iter().rposition(|m| m.role == Role::User);
        let user = last_user.map(|k| prompt.messages[k].content.clone());
        let template = prompt.template.clone().or_else(|| {
            user.as_ref().map(|u| {
                if u.trim_end().ends_with(':') {
                    u.clone()
                } else {
                    format!("{}\n{}:", u.trim_end(), title(&brief.output))
                }
            })
        });
        let template = template.unwrap_or(fresh.template);
        let demo_template = prompt
            .demo_template
            .clone()
            .unwrap_or_else(|| format!("{template} {{{{ {} }}}}\n\n", brief.output));
        Self {
            user: user.unwrap_or_else(|| template.clone()),
            template,
            demo_template,
            demos: prompt.demos.clone(),
            selector: prompt.selector.clone(),
            pool: prompt.pool.clone(),
            run: prompt.run.clone(),
        }
    }

    /// Demonstrations from examples (input fields and the output field only).
    pub fn with_demos(mut self, brief: &Brief, demos: &[Example]) -> Self {
        self.demos = demos
            .iter()
            .map(|e| {
                let mut vars: BTreeMap<String, Value> = brief
                    .inputs
                    .iter()
                    .filter_map(|i| e.vars.get(i).map(|v| (i.clone(), v.clone())))
                    .collect();
                // A demonstration shows one answer: the first accepted one.
                if let Some(out) = e
                    .expected
                    .as_ref()
                    .map(first_answer)
                    .or_else(|| e.vars.get(&brief.output).cloned())
                {
                    vars.insert(brief.output.clone(), out);
                }
                vars
            })
            .collect();
        self
    }

    /// [`Frame::prompt`] where the instruction may be absent (`None` writes none, not an empty
    /// one): how a demonstration move keeps its base prompt's instruction as it was.
    pub fn prompt_with(
        &self,
        name: &str,
        instruction: Option<&str>,
        constraints: &[String],
    ) -> PromptFile {
        let mut p = self.prompt(name, instruction.unwrap_or_default(), constraints);
        if instruction.is_none() {
            p.instruction = None;
        }
        p
    }

    /// A complete prompt: this frame with `instruction` (which replaces the source's
    /// instruction and system messages, see [`Frame::preamble`]), usable in both forms.
    pub fn prompt(&self, name: &str, instruction: &str, constraints: &[String]) -> PromptFile {
        let messages = vec![MessageTemplate {
            role: Role::User,
            content: self.user.clone(),
        }];
        PromptFile {
            name: name.to_string(),
            instruction: Some(instruction.to_string()),
            template: Some(self.template.clone()),
            demo_template: (!self.demos.is_empty() || !self.pool.is_empty())
                .then(|| self.demo_template.clone()),
            messages,
            demos: self.demos.clone(),
            selector: self.selector.clone().filter(|_| self.demos.is_empty()),
            pool: if self.demos.is_empty() {
                self.pool.clone()
            } else {
                Vec::new()
            },
            constraints: constraints.to_vec(),
            run: self.run.clone(),
            ..PromptFile::default()
        }
    }

    /// The instruction and system messages of a prompt, as one text: what a rewrite replaces.
    pub fn preamble(prompt: &PromptFile) -> String {
        let last_user = prompt.messages.iter().rposition(|m| m.role == Role::User);
        prompt
            .instruction
            .iter()
            .cloned()
            .chain(
                prompt
                    .messages
                    .iter()
                    .take(last_user.unwrap_or(0))
                    .filter(|m| m.role == Role::System)
                    .map(|m| m.content.clone()),
            )
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str, label: &str) -> Example {
        Example {
            id: text.into(),
            vars: [
                ("sentence".to_string(), json!(text)),
                ("label".to_string(), json!(label)),
            ]
            .into(),
            expected: Some(json!(label)),
        }
    }

    fn brief() -> Brief {
        Brief {
            name: "sst2".into(),
            description: "Sentiment.".into(),
            inputs: vec!["sentence".into()],
            output: "label".into(),
            labels: vec!["negative".into(), "positive".into()],
        }
    }

    #[test]
    fn demos_alternate_labels_even_when_one_dominates() {
        let mut pool: Vec<Example> = (0..20)
            .map(|i| ex(&format!("good {i}"), "positive"))
            .collect();
        pool.push(ex("bad 1", "negative"));
        pool.push(ex("bad 2", "negative"));
        let demos = pick_demos(&brief(), &pool, 4, 1);
        let labels: Vec<String> = demos
            .iter()
            .map(|d| as_text(d.expected.as_ref().unwrap()))
            .collect();
        assert_eq!(labels, ["negative", "positive", "negative", "positive"]);
        assert_eq!(pick_demos(&brief(), &pool, 4, 1)[0].id, demos[0].id);
    }

    #[test]
    fn a_fresh_frame_renders_in_both_forms() {
        let b = brief();
        let frame = Frame::fresh(&b).with_demos(&b, &[ex("fine film", "positive")]);
        let p = frame.prompt("p", "Label the review.", &[]);
        p.validate().unwrap();
        let vars = [("sentence".to_string(), json!("dull"))].into();
        let text = p.render(&vars, PromptFormat::Text, Some("label")).unwrap();
        assert_eq!(
            text,
            metaprompt_llm::Prompt::Text(
                "Label the review.\n\nSentence: fine film\nLabel: positive\n\nSentence: dull\nLabel:"
                    .into()
            )
        );
        let metaprompt_llm::Prompt::Chat(ms) =
            p.render(&vars, PromptFormat::Chat, Some("label")).unwrap()
        else {
            panic!()
        };
        assert_eq!(ms.len(), 4);
        assert_eq!(ms[2].content, "positive");
    }

    #[test]
    fn a_chat_prompt_gets_a_text_form_with_an_answer_cue() {
        let chat: PromptFile = toml::from_str(
            "instruction = \"You are a critic.\"\n[[messages]]\nrole = \"system\"\ncontent = \"Be brief.\"\n[[messages]]\nrole = \"user\"\ncontent = \"Review: {{ sentence }}\"\n",
        )
        .unwrap();
        let f = Frame::of(&chat, &brief());
        assert_eq!(f.template, "Review: {{ sentence }}\nLabel:");
        assert_eq!(f.user, "Review: {{ sentence }}");
        assert_eq!(Frame::preamble(&chat), "You are a critic.\nBe brief.");
    }

    #[test]
    fn a_rewrite_keeps_the_prompts_own_run_settings() {
        let brief = Brief {
            name: "t".into(),
            description: "Count.".into(),
            inputs: vec!["input".into()],
            output: "target".into(),
            labels: Vec::new(),
        };
        let mut worked = PromptFile::from_template("w", "Q: {{ input }}\nA:");
        worked.run = Some(toml::from_str("max_tokens = 300\nanswer_after = \"Answer:\"").unwrap());
        let rewritten = Frame::of(&worked, &brief).prompt("w", "Count them.", &[]);
        assert_eq!(
            rewritten.run, worked.run,
            "the worked form survives an instruction rewrite"
        );
        let plain = Frame::fresh(&brief).prompt("p", "Count them.", &[]);
        assert_eq!(plain.run, None);
    }
}
