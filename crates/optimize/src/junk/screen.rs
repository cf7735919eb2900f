//! [`Screen`]: what a run screens meta-written instructions against, built once from the
//! task, and the order in which [`Screen::check`] applies the reasons of [`Junk`].

use std::collections::{HashMap, HashSet};

use metaprompt_eval::dataset::Example;
use metaprompt_eval::prompt::PromptFile;

use super::Junk;
use super::code::{about_code, has_code};
use super::copies::Copies;
use super::framing::{about_an_instruction, vacuous};
use super::markup::tags;
use super::words::{INSTRUCTION_WORDS, content_words, opens_instruction};
use crate::brief::Brief;

/// Examples read for the task's vocabulary and for copies, at most.
const EXAMPLES_READ: usize = 200;

/// What a run screens instructions against, built once from the task.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    /// Every word that relates an instruction to the task, the words of instructions in
    /// general included.
    vocabulary: HashSet<String>,
    /// The task's own words only: its texts, expected outputs and recurring input words.
    own: HashSet<String>,
    /// Tag names the task's own texts use: an instruction may name them.
    tags: HashSet<String>,
    /// Whether the task is about code, so that code in an instruction is its point.
    code: bool,
    copies: Copies,
    /// The topic words of each example of form the meta-prompts show (`recipe`, `vegetarian`):
    /// its content words that are neither the task's nor instructions' in general.
    shown: Vec<HashSet<String>>,
    /// Names in the examples' inputs (words written with a capital inside a sentence: people,
    /// places, teams), lower case, less the words of the task's own texts and answers.
    names: HashSet<String>,
}

impl Screen {
    pub fn new(brief: &Brief, seed: &PromptFile, examples: &[&Example]) -> Self {
        let mut texts = vec![
            brief.name.replace(['-', '_'], " "),
            brief.description.clone(),
            brief.output.clone(),
            brief.inputs.join(" "),
            brief.labels.join(" "),
        ];
        texts.extend(seed.instruction.clone());
        texts.extend(seed.template.clone());
        texts.extend(seed.messages.iter().map(|m| m.content.clone()));
        let code = texts.iter().any(|t| about_code(t));
        let mut names = HashSet::new();
        let tags = texts.iter().flat_map(|t| tags(t)).collect();
        let mut own = texts;
        let mut copies = Copies::default();
        // In how many examples' inputs each word occurs: the domain's words recur, a stray
        // one (any word at all, over a few hundred examples) does not.
        let mut in_inputs: HashMap<String, usize> = HashMap::new();
        let read = examples.len().min(EXAMPLES_READ);
        for e in examples.iter().take(EXAMPLES_READ) {
            let expected = e.expected.as_ref().or_else(|| e.vars.get(&brief.output));
            for answer in expected
                .map(metaprompt_eval::dataset::accepted)
                .unwrap_or_default()
            {
                copies.add_output(&answer);
                own.push(answer);
            }
            for (key, value) in &e.vars {
                if *key == brief.output {
                    continue;
                }
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                copies.add_input(&text);
                names.extend(capitalized(&text).map(str::to_lowercase));
                for w in content_words(&text).collect::<HashSet<_>>() {
                    *in_inputs.entry(w).or_default() += 1;
                }
            }
        }
        let recurring = (read / 50).max(3);
        for t in &own {
            for w in t.split(|c: char| !c.is_alphanumeric()) {
                names.remove(&w.to_lowercase());
            }
        }
        let mut own: HashSet<String> = own.iter().flat_map(|t| content_words(t)).collect();
        own.extend(
            in_inputs
                .into_iter()
                .filter(|&(_, n)| n >= recurring)
                .map(|(w, _)| w),
        );
        let mut vocabulary = own.clone();
        vocabulary.extend(content_words(&INSTRUCTION_WORDS.join(" ")));
        Self {
            vocabulary,
            own,
            tags,
            code,
            copies,
            shown: Vec::new(),
            names,
        }
    }

    /// Also reject copies of these instructions: the examples of form the meta-prompts show
    /// ([`crate::meta::MetaPrompts::shown_instructions`]). A copy is told by the example's
    /// topic, not its form: half of its topic words or more (at least one). The form is what
    /// the example is for, and on a yes-or-no task "Read the sentence and decide whether it is
    /// plausible. Answer with yes or no only." shares 13 of its 15 words with "Read the recipe
    /// and decide whether it is vegetarian. Answer with yes or no only."
    pub fn with_shown(mut self, instructions: &[String]) -> Self {
        for i in instructions {
            let topic: HashSet<String> = content_words(i)
                .filter(|w| !self.vocabulary.contains(w))
                .collect();
            if !topic.is_empty() {
                self.shown.push(topic);
            }
        }
        self
    }

    /// Whether `text` is about the topic of an example of form.
    fn copies_shown(&self, text: &str) -> bool {
        let own: HashSet<String> = content_words(text).collect();
        self.shown.iter().any(|topic| {
            let shared = topic.iter().filter(|w| own.contains(*w)).count();
            shared > 0 && shared * 2 >= topic.len()
        })
    }

    /// The first reason `instruction` is junk, or `None`.
    pub fn check(&self, instruction: &str) -> Option<Junk> {
        let text = instruction.trim();
        if text.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return Some(Junk::Empty);
        }
        if tags(text).iter().any(|t| !self.tags.contains(t)) {
            return Some(Junk::Markup);
        }
        // Before the count of letters: code is mostly punctuation, and this is its reason.
        if !self.code && has_code(text) {
            return Some(Junk::Code);
        }
        let visible = text.chars().filter(|c| !c.is_whitespace()).count();
        let letters = text.chars().filter(|c| c.is_alphabetic()).count();
        if letters * 2 < visible {
            return Some(Junk::NoWords);
        }
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let distinct: HashSet<&String> = words.iter().collect();
        if words.len() >= 8 && distinct.len() * 3 < words.len() {
            return Some(Junk::Repeats);
        }
        if self.copies.copied(text) || self.copies_shown(text) {
            return Some(Junk::CopiesExample);
        }
        if about_an_instruction(text) {
            return Some(Junk::Wrapper);
        }
        // "…the city is located in New York, USA" (TREC), "…whether Crista tells the truth"
        // (web of lies): an instruction for every input does not name one input's people.
        if capitalized(text).any(|w| self.names.contains(&w.to_lowercase())) {
            return Some(Junk::Names);
        }
        if vacuous(text, &self.own) {
            return Some(Junk::Vacuous);
        }
        if fragment(&words, text) {
            return Some(Junk::Fragment);
        }
        let content: HashSet<String> = content_words(text).collect();
        if content.len() >= 2 && !self.vocabulary.is_empty() {
            let shared = content.iter().any(|w| self.vocabulary.contains(w));
            if !shared {
                return Some(Junk::Unrelated);
            }
        }
        None
    }
}

/// Two words or fewer, no full stop, and not opening with a verb of instructions: a label or a
/// title ("language classification"), not an order. "Classify sentiment" and "Reverse." pass.
fn fragment(words: &[String], text: &str) -> bool {
    words.len() <= 2
        && !text.ends_with(['.', '!', '?'])
        && !words.first().is_some_and(|w| opens_instruction(w))
}

/// The words of `text` written with a capital letter inside a sentence (not its first word,
/// nor one after `.`, `!`, `?`, `:` or a line break): names, in most texts.
fn capitalized(text: &str) -> impl Iterator<Item = &str> {
    text.lines().flat_map(|line| {
        let mut initial = true;
        line.split_whitespace().filter_map(move |raw| {
            let starts = initial;
            initial = raw.ends_with(['.', '!', '?', ':']);
            let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
            let named = !starts
                && word.chars().count() >= 2
                && word.chars().next().is_some_and(char::is_uppercase)
                && word.chars().all(char::is_alphabetic);
            named.then_some(word)
        })
    })
}
