//! Generate and translate: the single-pass meta-layer jobs, and what they share with
//! optimization (meta-prompts, the guardrail, protected constraints, result files).

use std::path::{Path, PathBuf};

use metaprompt_eval::{Example, PromptFile, Task};
use metaprompt_llm::{PromptFormat, Provider};
use metaprompt_optimize::brief::{pick_demos, slug};
use metaprompt_optimize::{
    Brief, Evaluation, Frame, GenerateSpec, Generated, Guard, Layers, MetaPrompts, TranslateSpec,
    Translated,
};
use metaprompt_registry::Origin;
use serde::Serialize;

use crate::handle::{Handle, Reporter};
use crate::library::{self, OneShot, Stored};
use crate::request::{GenerateRequest, MetaOptions, TranslateRequest};
use crate::{Engine, EngineError, cancellable};

/// Examples shown to the meta model (at least this many when the train split has them).
const SHOWN: usize = 4;

/// The meta-prompts in effect, with the system message override.
pub(crate) fn meta_prompts(
    options: &MetaOptions,
    task: Option<&Task>,
) -> Result<MetaPrompts, EngineError> {
    let system = options
        .meta_system
        .clone()
        .or_else(|| task.and_then(|t| t.config.models.meta_system.clone()));
    Ok(MetaPrompts::load(options.templates.as_deref())?.with_system(system))
}

/// The guardrail: the judge model when one is named, else the meta model (used only if
/// instruction-tuned); either way on the meta layer's meter.
pub(crate) fn guard(
    options: &MetaOptions,
    engine: &Engine,
    layers: &Layers,
) -> Result<Guard, EngineError> {
    let judge = match &options.judge {
        Some(spec) => layers.also_meta(engine.hub().model(spec)?),
        None => layers.meta.clone(),
    };
    Ok(Guard::new(Some(judge)))
}

/// Protected constraints: the task's, the prompt's and the request's, each once.
pub(crate) fn constraints(
    task: Option<&Task>,
    prompt: Option<&PromptFile>,
    extra: &[String],
) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let sources = task
        .map(|t| t.config.constraints.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(prompt.map(|p| p.constraints.as_slice()).unwrap_or_default())
        .chain(extra);
    for c in sources {
        let c = c.trim();
        if !c.is_empty() && !all.iter().any(|a| a == c) {
            all.push(c.to_string());
        }
    }
    all
}

/// Where a result goes: the request's path, else `<task dir>/results/<name>.toml`, else
/// `./<name>.toml`; a default path that exists gets a numbered sibling instead.
pub(crate) fn out_path(out: Option<&Path>, task: Option<&Task>, name: &str) -> PathBuf {
    if let Some(o) = out {
        return o.to_path_buf();
    }
    let dir = task.map_or_else(|| PathBuf::from("."), |t| t.dir().join("results"));
    let mut path = dir.join(format!("{name}.toml"));
    let mut k = 2;
    while path.exists() {
        path = dir.join(format!("{name}-{k}.toml"));
        k += 1;
    }
    path
}

/// Write the prompt and, beside it, the full report as JSON; returns the report's path.
pub(crate) fn write_outputs(
    path: &Path,
    prompt: &PromptFile,
    report: &impl Serialize,
) -> Result<PathBuf, EngineError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, "cannot create", e))?;
    }
    std::fs::write(path, prompt.to_toml()?)
        .map_err(|e| EngineError::io(path, "cannot write", e))?;
    let report_path = path.with_extension("report.json");
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| EngineError::io(&report_path, "cannot write", std::io::Error::other(e)))?;
    std::fs::write(&report_path, json)
        .map_err(|e| EngineError::io(&report_path, "cannot write", e))?;
    Ok(report_path)
}

/// How a model takes prompts, in words.
pub(crate) fn form(p: &dyn Provider) -> &'static str {
    match p.info().format {
        PromptFormat::Chat => "chat",
        PromptFormat::Text => "text",
    }
}

/// The files a single-pass job wrote, when it chose a prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub prompt: PathBuf,
    pub report: PathBuf,
}

/// What `generate` produced.
#[derive(Debug, Serialize)]
pub struct GenerateResult {
    pub generated: Generated,
    /// The chosen prompt's files; `None` when no candidate passed the checks.
    pub written: Option<Written>,
    pub stored: Stored,
}

/// What `translate` produced.
#[derive(Debug, Serialize)]
pub struct TranslateResult {
    pub translated: Translated,
    pub written: Option<Written>,
    pub stored: Stored,
}

impl Engine {
    /// Write a prompt from a task description; with a task, check and score the candidates.
    pub fn generate(&self, request: GenerateRequest) -> Handle<GenerateResult> {
        let engine = self.clone();
        Handle::spawn(move |report, cancel| async move {
            cancellable(&cancel, engine.run_generate(request, &report)).await
        })
    }

    async fn run_generate(
        &self,
        r: GenerateRequest,
        report: &Reporter,
    ) -> Result<GenerateResult, EngineError> {
        let started_at = chrono::Utc::now();
        let task = r.task.as_deref().map(Task::load).transpose()?;
        self.library().await?;
        let mut brief = match (&task, &r.description) {
            (Some(t), _) => Brief::from_task(t),
            (None, Some(d)) => Brief::from_description(d),
            (None, None) => {
                return Err(EngineError::Invalid {
                    field: "description",
                    message: "say what the prompt must do, or give a task".into(),
                });
            }
        };
        if let Some(d) = &r.description {
            if d.trim().is_empty() {
                return Err(EngineError::Invalid {
                    field: "description",
                    message: "the task description is empty".into(),
                });
            }
            brief.description = d.trim().to_string();
        }
        let hub = self.hub();
        let default_models = metaprompt_eval::task::ModelsConfig::default();
        let models = task.as_ref().map_or(&default_models, |t| &t.config.models);
        let meta_model = hub.model(r.meta.meta.as_deref().unwrap_or(&models.meta))?;
        let execution = hub.model(r.model.as_deref().unwrap_or(&models.execution))?;
        let layers = Layers::new(meta_model, execution);
        let meta_prompts = meta_prompts(&r.meta, task.as_ref())?;
        let guard = guard(&r.meta, self, &layers)?;
        let constraints = constraints(
            task.as_ref(),
            task.as_ref().map(|t| &t.seed_prompt),
            &r.meta.constraints,
        );
        // Demonstrations and the examples the meta model sees come from the train split.
        let train: Vec<Example> = match &task {
            Some(t) => crate::optional_split(t, "train")?,
            None => Vec::new(),
        };
        let picked = pick_demos(&brief, &train, r.demos.max(SHOWN), r.meta.seed);
        let shown = picked.iter().take(SHOWN).map(|e| brief.show(e)).collect();
        let frame = match &task {
            Some(t) => Frame::of(&t.seed_prompt, &brief),
            None => Frame::fresh(&brief),
        };
        let demos: Vec<Example> = picked.iter().take(r.demos).cloned().collect();
        let frame = if demos.is_empty() && r.demos > 0 {
            frame // no train data: the seed's own demonstrations, if any, stay
        } else {
            frame.with_demos(&brief, &demos)
        };
        let evaluation = match (&task, r.no_eval) {
            (Some(t), false) => Some(Evaluation {
                scorer: crate::scorer(t, hub, |p| layers.also_meta(p))?,
                examples: crate::examples(t, &r.once.split, r.once.limit, None)?,
                options: crate::options(t),
                split: r.once.split.clone(),
            }),
            _ => None,
        };
        let name = r.name.clone().unwrap_or_else(|| match &task {
            Some(t) => format!("{}-generated", t.config.name),
            None => brief.name.clone(),
        });
        crate::check_name("name", &name)?;
        let spec = GenerateSpec {
            brief,
            shown,
            frame,
            constraints,
            candidates: r.candidates,
            meta_temperature: r.once.meta_temperature.unwrap_or(models.meta_temperature),
            seed: r.meta.seed,
            name: name.clone(),
            seed_prompt: task.as_ref().map(|t| t.seed_prompt.clone()),
        };
        let judge = if spec.constraints.is_empty() {
            String::new()
        } else {
            format!(
                " · {} protected constraint(s), judge: {}",
                spec.constraints.len(),
                if guard.has_judge() {
                    "yes"
                } else {
                    "none (lexical check only)"
                }
            )
        };
        report.send(crate::Progress::Begin {
            text: format!(
                "generate · {} · meta {} ({} meta-prompts) · execution {}{judge}",
                spec.brief.name,
                layers.meta.info().name,
                match layers.meta.info().format {
                    PromptFormat::Chat => "chat",
                    PromptFormat::Text => "completion",
                },
                layers.execution.info().name,
            ),
        });
        let generated = metaprompt_optimize::generate(
            &meta_prompts,
            &layers,
            &guard,
            &spec,
            evaluation.as_ref(),
            &|e| report.event(e),
        )
        .await?;
        let Some(mut prompt) = generated.prompt() else {
            return Ok(GenerateResult {
                generated,
                written: None,
                stored: Stored::Off,
            });
        };
        // Scored on a task: it runs as the task evaluated it.
        if let (Some(t), Some(_)) = (&task, &evaluation) {
            prompt.run = Some(metaprompt_eval::settings::RunSettings::of_task(t));
        }
        let path = out_path(r.once.out.as_deref(), task.as_ref(), &name);
        let report_path = write_outputs(&path, &prompt, &generated)?;
        let library_name = r.name.clone().unwrap_or_else(|| match &task {
            Some(t) => t.config.name.clone(),
            None => generated.task.name.clone(),
        });
        let seed_why = r
            .task
            .as_ref()
            .map(|p| format!("the seed prompt of {}", p.display()))
            .unwrap_or_default();
        let mut batch = library::one_shot_batch(&OneShot {
            kind: Origin::Generate,
            author: self.author(),
            name: &library_name,
            task: task.as_ref(),
            task_path: r.task.as_deref(),
            baseline: task
                .as_ref()
                .map(|t| (&t.seed_prompt, generated.seed_score.as_ref(), seed_why)),
            candidates: &generated.candidates,
            chosen: generated.chosen,
            prompt: &prompt,
            versus: generated.versus_seed.as_ref().map(|c| &c.paired),
            split: generated.split.as_deref().unwrap_or(&r.once.split),
            model: &generated.execution_model,
            costs: &generated.costs,
            config: serde_json::json!({
                "meta_model": generated.meta_model,
                "candidates": r.candidates,
                "demos": r.demos,
                "seed": r.meta.seed,
            }),
            started_at,
        })?;
        if !generated.scored {
            // Nothing was measured: the proposal says so where a reviewer reads it.
            if let Some((v, _)) = batch.versions.last_mut() {
                let made = v.message.take().unwrap_or_else(|| "generate".into());
                v.message = Some(format!(
                    "{made} · no evidence: nothing was scored (no data); kept as written"
                ));
            }
        }
        let stored = self.store(batch).await?;
        Ok(GenerateResult {
            generated,
            written: Some(Written {
                prompt: path.clone(),
                report: report_path.clone(),
            }),
            stored,
        })
    }

    /// Rewrite a prompt for another model and measure parity on the task's data.
    pub fn translate(&self, request: TranslateRequest) -> Handle<TranslateResult> {
        let engine = self.clone();
        Handle::spawn(move |report, cancel| async move {
            cancellable(&cancel, engine.run_translate(request, &report)).await
        })
    }

    async fn run_translate(
        &self,
        r: TranslateRequest,
        report: &Reporter,
    ) -> Result<TranslateResult, EngineError> {
        let started_at = chrono::Utc::now();
        let task = Task::load(&r.task)?;
        let source = PromptFile::load(&r.prompt)?;
        self.library().await?;
        let hub = self.hub();
        let brief = Brief::from_task(&task);
        let from = r
            .from
            .clone()
            .or_else(|| source.target_model.clone())
            .unwrap_or_else(|| task.config.models.execution.clone());
        let meta_model = hub.model(r.meta.meta.as_deref().unwrap_or(&task.config.models.meta))?;
        let layers = Layers::new(meta_model, hub.model(&r.to)?);
        let source_model = layers.also_execution(hub.model(&from)?);
        let meta_prompts = meta_prompts(&r.meta, Some(&task))?;
        let guard = guard(&r.meta, self, &layers)?;
        let constraints = constraints(Some(&task), Some(&source), &r.meta.constraints);
        let train = crate::optional_split(&task, "train")?;
        let shown = pick_demos(&brief, &train, 4, r.meta.seed)
            .iter()
            .map(|e| brief.show(e))
            .collect();
        let evaluation = Evaluation {
            scorer: crate::scorer(&task, hub, |p| layers.also_meta(p))?,
            examples: crate::examples(&task, &r.once.split, r.once.limit, None)?,
            options: crate::options(&task),
            split: r.once.split.clone(),
        };
        let target_name = layers.execution.info().name.clone();
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-for-{}", source.name, slug(&target_name)));
        crate::check_name("name", &name)?;
        let spec = TranslateSpec {
            brief,
            shown,
            constraints,
            source: source.clone(),
            variants: r.variants,
            meta_temperature: r
                .once
                .meta_temperature
                .unwrap_or(task.config.models.meta_temperature),
            seed: r.meta.seed,
            name: name.clone(),
        };
        report.send(crate::Progress::Begin {
            text: format!(
                "translate · {} · from {} ({}) to {} ({}) · meta {}",
                r.prompt.display(),
                source_model.info().name,
                form(source_model.as_ref()),
                target_name,
                form(layers.execution.as_ref()),
                layers.meta.info().name
            ),
        });
        let translated = metaprompt_optimize::translate(
            &meta_prompts,
            &layers,
            &source_model,
            &guard,
            &spec,
            &evaluation,
            &|e| report.event(e),
        )
        .await?;
        let Some(mut prompt) = translated.prompt() else {
            return Ok(TranslateResult {
                translated,
                written: None,
                stored: Stored::Off,
            });
        };
        prompt.run = Some(metaprompt_eval::settings::RunSettings::of_task(&task));
        let path = out_path(r.once.out.as_deref(), Some(&task), &name);
        let report_path = write_outputs(&path, &prompt, &translated)?;
        let source_why = format!(
            "the source prompt {}, written for {}",
            r.prompt.display(),
            translated.source_model
        );
        let batch = library::one_shot_batch(&OneShot {
            kind: Origin::Translate,
            author: self.author(),
            name: &name,
            task: Some(&task),
            task_path: Some(&r.task),
            baseline: Some((&source, Some(&translated.source_score), source_why)),
            candidates: &translated.candidates,
            chosen: translated.chosen,
            prompt: &prompt,
            versus: translated.parity.as_ref().map(|c| &c.paired),
            split: &translated.split,
            model: &translated.target_model,
            costs: &translated.costs,
            config: serde_json::json!({
                "from": translated.source_model,
                "to": translated.target_model,
                "meta_model": translated.meta_model,
                "variants": r.variants,
                "seed": r.meta.seed,
            }),
            started_at,
        })?;
        let stored = self.store(batch).await?;
        Ok(TranslateResult {
            translated,
            written: Some(Written {
                prompt: path.clone(),
                report: report_path.clone(),
            }),
            stored,
        })
    }
}
