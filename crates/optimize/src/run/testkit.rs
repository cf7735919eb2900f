//! A tiny problem and scripted models for the run's unit tests: the execution model labels a
//! review right only when the prompt contains "magic" (else it always says "positive": half
//! right); the meta model answers from a function of its prompt.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use metaprompt_eval::{EvalOptions, Example, PromptFile, Scorer};
use metaprompt_llm::testing::ScriptedProvider;
use metaprompt_llm::{ModelInfo, Prompt, PromptFormat, Provider, ProviderKind, Request};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Budget, Ctx, Entry, Halt, MemoryRunStore, Optimizer, Problem, Runner, Settings};
use crate::{Brief, Event, Frame, Guard, Layers, MetaPrompts};

pub fn example(i: usize) -> Example {
    let label = if i.is_multiple_of(2) {
        "positive"
    } else {
        "negative"
    };
    Example {
        id: format!("e{i}"),
        vars: [
            (
                "sentence".to_string(),
                json!(format!("review number {i} is {label}")),
            ),
            ("label".to_string(), json!(label)),
        ]
        .into(),
        expected: Some(json!(label)),
    }
}

pub fn text(r: &Request) -> String {
    match &r.prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Chat(m) => m
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// The number of the review a request is about.
pub fn review(r: &Request) -> usize {
    let t = text(r);
    let last = t
        .lines()
        .rev()
        .find(|l| l.starts_with("Review:"))
        .unwrap_or("");
    last.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or(usize::MAX)
}

/// A text-form execution model named `exec`, answering as the caller's `respond_with` says.
pub fn text_model() -> ScriptedProvider {
    let mut info = ModelInfo::new(ProviderKind::Local, "exec");
    info.format = PromptFormat::Text;
    ScriptedProvider::new("exec").with_info(info)
}

/// The execution model: right only with "magic" in the prompt.
pub fn executor() -> ScriptedProvider {
    text_model().respond_with(|r| {
        let negative = review(r) % 2 == 1;
        Ok(if text(r).contains("magic") && negative {
            "negative".into()
        } else {
            "positive".into()
        })
    })
}

pub fn meta_model() -> ScriptedProvider {
    let mut info = ModelInfo::new(ProviderKind::Openai, "meta");
    info.format = PromptFormat::Chat;
    ScriptedProvider::new("meta")
        .with_info(info)
        .respond_with(|_| Ok("<prompt>Label it.</prompt>".into()))
}

pub fn problem(dev: usize, test: usize) -> Problem {
    let brief = Brief {
        name: "synthetic".into(),
        description: "Label the review.".into(),
        inputs: vec!["sentence".into()],
        output: "label".into(),
        labels: vec!["negative".into(), "positive".into()],
    };
    let mut seed = PromptFile::from_template("seed", "Review: {{ sentence }}\nLabel:");
    seed.instruction = Some("Label the review.".into());
    let metric =
        toml::from_str("type = \"choice\"\nlabels = [\"negative\", \"positive\"]").unwrap();
    Problem {
        frame: Frame::of(&seed, &brief),
        seed_prompt: seed,
        constraints: Vec::new(),
        train: (1000..1012).map(example).collect(),
        dev: (0..dev).map(example).collect(),
        confirm: Vec::new(),
        test: (500..500 + test).map(example).collect(),
        scorer: Scorer::new(&[metric], None).unwrap(),
        options: EvalOptions {
            temperature: 0.0,
            max_tokens: 4,
            stop: vec![],
            output: "label".into(),
            seed: 1,
            answer_after: None,
        },
        brief,
    }
}

fn quiet(_: Event<'_>) {}

/// The simplest optimizer: each round one meta call, its instruction proposed and raced
/// against the best.
#[derive(Debug, Default)]
pub struct OneAtATime;

#[async_trait::async_trait]
impl Optimizer for OneAtATime {
    fn name(&self) -> &'static str {
        "one-at-a-time"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        let best = ctx.best();
        let vars = serde_json::json!({
            "task": ctx.problem.brief,
            "instruction": ctx.pool[best].prompt.instruction.clone().unwrap_or_default(),
            "constraints": ctx.problem.constraints,
        });
        let frame = Frame::of(&ctx.pool[best].prompt, &ctx.problem.brief);
        let parents = vec![ctx.pool[best].id.clone()];
        for answer in ctx.meta("paraphrase", &vars, 1).await? {
            if let Some(i) = ctx
                .propose_instruction(&answer, &frame, parents.clone(), "test")
                .await
                && i != best
            {
                ctx.race(vec![i, best], 1).await?;
            }
        }
        Ok(())
    }
}

/// Everything a [`Runner`] borrows.
#[derive(Debug)]
pub struct Kit {
    pub meta_prompts: MetaPrompts,
    pub layers: Layers,
    pub guard: Guard,
    pub problem: Problem,
    pub settings: Settings,
    pub budget: Budget,
    pub store: MemoryRunStore,
    pub cancel: CancellationToken,
}

impl Kit {
    pub fn new(dev: usize, test: usize) -> Self {
        Self::with(meta_model(), executor(), problem(dev, test))
    }

    pub fn with(meta: ScriptedProvider, exec: ScriptedProvider, problem: Problem) -> Self {
        Self {
            meta_prompts: MetaPrompts::builtin(),
            layers: Layers::new(
                Arc::new(meta) as Arc<dyn Provider>,
                Arc::new(exec) as Arc<dyn Provider>,
            ),
            guard: Guard::new(None),
            problem,
            settings: Settings {
                minibatch: 4,
                ..Settings::default()
            },
            budget: Budget::default(),
            store: MemoryRunStore::new(),
            cancel: CancellationToken::new(),
        }
    }

    pub fn runner(&self) -> Runner<'_> {
        Runner {
            meta_prompts: &self.meta_prompts,
            layers: &self.layers,
            guard: &self.guard,
            problem: &self.problem,
            settings: &self.settings,
            budget: &self.budget,
            task: Path::new("task.toml"),
            store: &self.store,
            observe: &quiet,
            cancel: self.cancel.clone(),
        }
    }

    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.runner())
    }

    /// A pool entry whose instruction is `word` (no checks), its index.
    pub fn add(&self, ctx: &mut Ctx<'_>, word: &str) -> usize {
        let frame = Frame::of(&self.problem.seed_prompt, &self.problem.brief);
        let prompt = frame.prompt("seed", &format!("Label the review, {word}."), &[]);
        let id = format!("p{}", ctx.pool.len());
        ctx.pool
            .push(Entry::new(id, prompt, Vec::new(), "test", ctx.round));
        ctx.pool.len() - 1
    }
}
