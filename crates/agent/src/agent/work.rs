//! A case's task directory: the incumbent as the seed prompt, the collected sets as data, the
//! task file that `eval` and `optimize` run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::AgentPromptConfig;
use metaprompt_eval::metric::{ChoiceOptions, MetricConfig, MetricSpec};
use metaprompt_eval::task::{DataConfig, ModelsConfig, PromptSource, TaskConfig};
use metaprompt_eval::{PromptFile, Task};
use metaprompt_registry::model::Version;
use serde_json::json;

use crate::case::Case;
use crate::collect::{Item, Part, Sets, part};

use super::*;

/// A case's task directory: the incumbent as the seed, the sets as data.
pub(super) struct Work {
    pub(super) dir: PathBuf,
    pub(super) task: PathBuf,
    pub(super) labels: Option<Vec<String>>,
    pub(super) dev: usize,
    pub(super) check: Vec<Item>,
}

impl Work {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        dir: &Path,
        case: &Case,
        incumbent: &Version,
        file: &PromptFile,
        sets: &Sets,
        cfg: &AgentPromptConfig,
        model: &str,
        meta: &str,
    ) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let own_task = match &cfg.task {
            Some(t) => Some(Task::load(t).map_err(|e| AgentError::Config {
                field: format!("prompts.{}.task", case.prompt),
                message: e.to_string(),
            })?),
            None => None,
        };
        let output = own_task
            .as_ref()
            .map(|t| t.config.output.clone())
            .or_else(|| demo_output(file))
            .unwrap_or_else(|| "answer".into());
        let items: Vec<&Item> = sets.failing_scored().chain(sets.passing.iter()).collect();
        let mut inputs: BTreeSet<String> = file.variables().into_iter().collect();
        for i in &items {
            inputs.extend(i.inputs.keys().cloned());
        }
        inputs.remove(&output);
        let expected: BTreeSet<String> = items.iter().filter_map(|i| i.expected.clone()).collect();
        let labels =
            (own_task.is_none() && expected.len() <= 12 && expected.len() * 2 < items.len())
                .then(|| expected.iter().cloned().collect::<Vec<_>>());
        let (mut train, mut dev, mut check) = (Vec::new(), Vec::new(), Vec::new());
        for i in &items {
            match part(i) {
                Part::Train => train.push((*i).clone()),
                Part::Dev => dev.push((*i).clone()),
                Part::Check => check.push((*i).clone()),
            }
        }
        let line = |i: &Item| {
            let mut row: serde_json::Map<String, serde_json::Value> =
                i.inputs.clone().into_iter().collect();
            row.insert(
                output.clone(),
                json!(i.expected.clone().unwrap_or_default()),
            );
            serde_json::Value::Object(row).to_string()
        };
        for (name, part) in [("train", &train), ("dev", &dev), ("check", &check)] {
            let text: String = part.iter().map(|i| line(i) + "\n").collect();
            write(&dir.join(format!("{name}.jsonl")), text.as_bytes())?;
        }
        write(
            &dir.join("incumbent.toml"),
            file.to_toml()
                .map_err(|e| AgentError::Data(e.to_string()))?
                .as_bytes(),
        )?;
        // Proposals are checked the way the incumbent is served: with its `[run]` settings
        // when it has them (a choice scored over its labels), else as the server's defaults
        // run it (generated and read).
        let run = file.run.clone();
        let metrics = match (
            &own_task,
            run.as_ref().and_then(|r| r.labels.clone()),
            &labels,
        ) {
            (Some(t), _, _) => t.config.metrics.clone(),
            (None, Some(l), _) => vec![MetricConfig::new(MetricSpec::Choice(ChoiceOptions {
                labels: l,
                generate: false,
            }))],
            (None, None, Some(l)) => vec![MetricConfig::new(MetricSpec::Choice(ChoiceOptions {
                labels: l.clone(),
                generate: true,
            }))],
            (None, None, None) => vec![MetricConfig::equals()],
        };
        let config = TaskConfig {
            name: slug(&case.prompt),
            description: file.description.clone().unwrap_or_else(|| {
                format!(
                    "The served prompt `{}`, on its live traffic ({} failing).",
                    case.prompt, case.slice
                )
            }),
            inputs: inputs.into_iter().collect(),
            output,
            prompt: PromptSource::File("incumbent.toml".into()),
            constraints: incumbent.constraints.clone(),
            data: DataConfig {
                train: Some("train.jsonl".into()),
                dev: Some("dev.jsonl".into()),
                test: Some("check.jsonl".into()),
                ..DataConfig::default()
            },
            metrics,
            models: ModelsConfig {
                execution: model.to_string(),
                meta: meta.to_string(),
                max_tokens: run
                    .as_ref()
                    .map(|r| r.max_tokens)
                    .or(cfg.max_tokens)
                    .unwrap_or(16),
                stop: run
                    .as_ref()
                    .map_or_else(|| cfg.stop.clone(), |r| r.stop.clone()),
                execution_temperature: run.as_ref().map_or(0.0, |r| r.temperature),
                ..ModelsConfig::default()
            },
            budget: Default::default(),
        };
        let task = dir.join("task.toml");
        let text = toml::to_string_pretty(&config)
            .map_err(|e| AgentError::Data(format!("task of case {}: {e}", case.id)))?;
        write(&task, text.as_bytes())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            task,
            labels,
            dev: dev.len(),
            check,
        })
    }
}
