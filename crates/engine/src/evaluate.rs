//! Eval and compare: a prompt (or two) scored on a task's examples.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use metaprompt_eval::evaluator::{self, Comparison};
use metaprompt_eval::{EvalOptions, Example, PromptFile, Report, Scorer, Task};
use metaprompt_llm::Provider;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::handle::{Handle, Progress, Reporter};
use crate::request::{CompareRequest, EvalRequest, Scope};
use crate::{BOOTSTRAP_SEED, Engine, EngineError, cancellable};

/// What an evaluation produced.
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub task: String,
    pub split: String,
    #[serde(skip)]
    pub report: Report,
    /// The per-example JSONL.
    pub out: PathBuf,
}

/// Two prompts on the same examples.
#[derive(Debug, Clone, Serialize)]
pub struct CompareResult {
    pub task: String,
    pub split: String,
    pub comparison: Comparison,
}

/// A task, a model and the examples of a scope, ready to score prompts.
struct Bench {
    task: Task,
    model: Arc<dyn Provider>,
    scorer: Scorer,
    examples: Vec<Example>,
    options: EvalOptions,
}

impl Bench {
    /// The task's examples of `scope`, ready to score `prompt` as it runs: on the scope's
    /// model, else the prompt's `target_model`, else the task's execution model; with the
    /// prompt's own `[run]` settings where it has them (what differs from the task is said on
    /// `report`).
    fn open(
        engine: &Engine,
        scope: &Scope,
        task: &Task,
        prompt: &PromptFile,
        report: &Reporter,
    ) -> Result<Self, EngineError> {
        let task = match &prompt.run {
            Some(run) => {
                let (task, notes) = run.apply(task);
                if !notes.is_empty() {
                    report.step(format!(
                        "{} runs with its own [run]: {}",
                        prompt.name,
                        notes.join("; ")
                    ));
                }
                task
            }
            None => task.clone(),
        };
        let hub = engine.hub();
        let spec = scope
            .model
            .as_deref()
            .or(prompt.target_model.as_deref())
            .unwrap_or(&task.config.models.execution);
        if scope.model.is_none() && spec != task.config.models.execution {
            report.step(format!(
                "{} runs on its target model {spec} (the task's: {}; --model chooses another)",
                prompt.name, task.config.models.execution
            ));
        }
        let model = hub.model(spec)?;
        let scorer = crate::scorer(&task, hub, |p| p)?;
        let examples = crate::examples(&task, &scope.split, scope.limit, scope.sample_seed)?;
        let options = crate::options(&task);
        Ok(Self {
            task,
            model,
            scorer,
            examples,
            options,
        })
    }

    /// Whether `prompt` fits the model on every example (checked before any call).
    fn fits(&self, prompt: &PromptFile) -> Result<(), EngineError> {
        crate::fits(prompt, self.model.as_ref(), &self.examples, &self.options)
    }

    async fn score(&self, prompt: &PromptFile, report: &Reporter) -> Result<Report, EngineError> {
        let label = prompt.name.clone();
        let progress = |done, total| {
            report.send(Progress::Evaluating {
                label: label.clone(),
                done,
                total,
            });
        };
        let r = evaluator::evaluate(
            prompt,
            &self.model,
            &self.scorer,
            &self.examples,
            &self.options,
            &progress,
        )
        .await?;
        report.send(Progress::Evaluated {
            label,
            summary: Box::new(r.summary.clone()),
        });
        Ok(r)
    }
}

fn load_prompt(path: &Path) -> Result<PromptFile, EngineError> {
    Ok(PromptFile::load(path)?)
}

/// `<task dir>/results/<prompt>.<split>.jsonl`.
pub(crate) fn default_out(task: &Task, prompt: &PromptFile, split: &str) -> PathBuf {
    let name: String = prompt
        .name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    task.dir().join("results").join(format!(
        "{name}.{}.jsonl",
        metaprompt_eval::name::slug(split)
    ))
}

impl Engine {
    /// Score outputs produced elsewhere (a served prompt's answers to a task's examples) with
    /// the task's metrics, as an evaluation scores them; one result per output, `Err` (why)
    /// for an output a metric could not score.
    pub async fn score_outputs(
        &self,
        task: &Path,
        outputs: &[(Example, String)],
    ) -> Result<Vec<Result<f64, String>>, EngineError> {
        let task = Task::load(task)?;
        let scorer = crate::scorer(&task, self.hub(), |p| p)?;
        let mut scores = Vec::with_capacity(outputs.len());
        for (example, output) in outputs {
            scores.push(scorer.value(example, output).await);
        }
        Ok(scores)
    }

    /// Score a prompt on a task's examples and write the per-example JSONL.
    pub fn eval(&self, request: EvalRequest) -> Handle<EvalResult> {
        let engine = self.clone();
        Handle::spawn(move |report, cancel| async move {
            cancellable(&cancel, engine.run_eval(request, &report)).await
        })
    }

    async fn run_eval(
        &self,
        request: EvalRequest,
        report: &Reporter,
    ) -> Result<EvalResult, EngineError> {
        let task = Task::load(&request.scope.task)?;
        let prompt = match &request.prompt {
            Some(p) => load_prompt(p)?,
            None => task.seed_prompt.clone(),
        };
        let bench = Bench::open(self, &request.scope, &task, &prompt, report)?;
        let out = request
            .out
            .clone()
            .unwrap_or_else(|| default_out(&bench.task, &prompt, &request.scope.split));
        bench.fits(&prompt)?;
        let r = bench.score(&prompt, report).await?;
        r.write_jsonl(&out)
            .map_err(|e| EngineError::io(&out, "cannot write", e))?;
        Ok(EvalResult {
            task: bench.task.config.name.clone(),
            split: request.scope.split,
            report: r,
            out,
        })
    }

    /// Score two prompts on the same examples and test whether the difference is real.
    pub fn compare(&self, request: CompareRequest) -> Handle<CompareResult> {
        let engine = self.clone();
        Handle::spawn(move |report, cancel: CancellationToken| async move {
            cancellable(&cancel, async {
                let task = Task::load(&request.scope.task)?;
                let a = load_prompt(&request.a)?;
                let b = load_prompt(&request.b)?;
                // Each prompt runs as it says (its model and `[run]`), on the same examples.
                let bench_a = Bench::open(&engine, &request.scope, &task, &a, &report)?;
                let bench_b = Bench::open(&engine, &request.scope, &task, &b, &report)?;
                bench_a.fits(&a)?;
                bench_b.fits(&b)?;
                let ra = bench_a.score(&a, &report).await?;
                let rb = bench_b.score(&b, &report).await?;
                Ok(CompareResult {
                    task: task.config.name.clone(),
                    split: request.scope.split.clone(),
                    comparison: evaluator::compare(&ra, &rb, BOOTSTRAP_SEED),
                })
            })
            .await
        })
    }
}
