//! A case's proposal: collect the sets, diagnose, search, check on every slice; file what passes
//! (or record the attempt and why), and what the diagnosis is shown.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use metaprompt_engine::{EngineError, EvalRequest, OptimizeRequest, Scope};
use metaprompt_eval::PromptFile;
use metaprompt_optimize::MetaPrompts;
use metaprompt_registry::model::{Batch, Evidence, NewVersion, Origin, Version, VersionRef};
use metaprompt_registry::service::InferenceQuery;
use serde_json::json;

use crate::case::{
    Attempt, Case, Diagnosis, Proposal, Search, SliceCheck, Spend, State, VersionId,
};
use crate::collect::{Item, Sets, collect};

use super::*;

impl Agent {
    /// Collect, diagnose, search, check; file the proposal or record the attempt.
    pub(super) async fn propose(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        calls_all: u64,
        calls_prompt: u64,
        all_cases: &[Case],
    ) -> Result<(), AgentError> {
        let cfg = self.settings.prompt(&case.prompt);
        if cfg.act == Some(false) {
            wait(
                case,
                now,
                "reporting only: [agent.prompts] act = false".into(),
            );
            return Ok(());
        }
        let cap_prompt = cfg.max_calls_per_day.unwrap_or(1000);
        let allowance = self
            .settings
            .max_calls_per_day
            .saturating_sub(calls_all)
            .min(cap_prompt.saturating_sub(calls_prompt));
        let usd_left = self.settings.max_usd_per_day.map(|cap| {
            let day = day_start(now);
            cap - all_cases.iter().map(|c| c.usd_since(day)).sum::<f64>()
        });
        // What the day's budget lacks for a search, in words (`None`: enough).
        let budget_short = if allowance < MIN_SEARCH_CALLS {
            Some(format!(
                "a search needs at least {MIN_SEARCH_CALLS} model calls and {allowance} are left \
                 today ({} of {} spent by all prompts, {calls_prompt} of {cap_prompt} by {})",
                calls_all, self.settings.max_calls_per_day, case.prompt
            ))
        } else if let (Some(left), Some(cap)) = (usd_left, self.settings.max_usd_per_day)
            && left <= 0.0
        {
            Some(format!(
                "today's {} are spent",
                metaprompt_llm::pricing::usd(cap)
            ))
        } else {
            None
        };
        let incumbent = self
            .library
            .resolve(&VersionRef::parse(&case.incumbent.hash)?)
            .await?;
        let (inferences, feedback) = self
            .read(&InferenceQuery {
                prompt: Some(case.prompt.clone()),
                since: Some(now - Duration::days(7)),
                until: Some(now),
                limit: Some(5000),
            })
            .await?;
        let work_dir = self.dir.join(slug(&case.id));
        // A search stopped midway resumes on the sets it started with.
        let stopped = case
            .search
            .clone()
            .filter(|s| Path::new(&s.run_dir).is_dir());
        let kept_sets = stopped
            .as_ref()
            .and_then(|_| crate::search::load_sets(&work_dir));
        let resuming = kept_sets.is_some();
        let sets = kept_sets.unwrap_or_else(|| {
            collect(&inferences, &feedback, case.incumbent.seq, &case.slice, 240)
        });
        let scored = sets.failing_scored().count();
        if !resuming && scored < MIN_FAILING {
            // Both when both: the budget does not hide what the data lacks.
            let also = budget_short
                .as_deref()
                .map_or(String::new(), |b| format!("; and the budget: {b}"));
            wait(
                case,
                now,
                format!(
                    "waiting for corrections: {scored} of {} failing inferences on {} have a \
                     corrected output ({MIN_FAILING} needed to search on){also}",
                    sets.failing.len(),
                    case.slice
                ),
            );
            return Ok(());
        }
        if let Some(b) = budget_short {
            wait(case, now, format!("waiting for budget: {b}"));
            return Ok(());
        }
        case.waiting = None;
        let model = inferences
            .iter()
            .find(|i| i.seq == case.incumbent.seq)
            .map(|i| i.model.clone())
            .ok_or_else(|| AgentError::Data("no inference of the incumbent".into()))?;
        let meta = self.settings.meta.clone().unwrap_or_else(|| model.clone());
        let file = incumbent.file()?;

        if !(resuming && case.diagnosis.is_some()) {
            self.progress.say(&format!(
                "case {}: {} failing ({scored} corrected), {} passing · diagnosing with {meta}",
                case.id,
                sets.failing.len(),
                sets.passing.len()
            ));
            let rejections: Vec<String> = all_cases
                .iter()
                .filter(|c| c.prompt == case.prompt && c.state == State::Rejected)
                .filter_map(|c| c.review_comment.clone())
                .collect();
            let diagnosis = self.diagnose(case, &file, &sets, &meta, &rejections).await;
            case.note(
                now,
                format!(
                    "diagnosed: {} · {}",
                    diagnosis.summary, diagnosis.hypothesis
                ),
            );
            case.diagnosis = Some(diagnosis);
        }

        let work = Work::write(
            &work_dir, case, &incumbent, &file, &sets, &cfg, &model, &meta,
        )?;
        crate::search::save_sets(&work_dir, &sets)?;
        let algorithm = cfg.algorithm.clone().unwrap_or_else(|| {
            if work.labels.is_some() {
                "fewshot".into()
            } else {
                "protegi".into()
            }
        });
        let resumed = match (&stopped, resuming) {
            (Some(s), true) => match self.engine.resume(Path::new(&s.run_dir)).await {
                Ok(run) => Some((run, s.clone())),
                Err(e) => {
                    case.note(
                        now,
                        format!(
                            "the search in {} does not resume ({e}); a new one starts",
                            s.run_dir
                        ),
                    );
                    None
                }
            },
            _ => None,
        };
        let (run, mut search) = match resumed {
            Some((run, s)) => {
                case.note(now, format!("resumed search: {}", s.run_dir));
                (run, s)
            }
            None => {
                let mut request = OptimizeRequest::new(&work.task);
                request.algorithm = algorithm.clone();
                request.name = Some(case.prompt.clone());
                request.meta.seed = 7;
                request.meta.meta = Some(meta.clone());
                request.budget.max_metric_calls = Some(allowance.min(600));
                request.budget.max_meta_calls = Some(20);
                request.budget.max_cost_usd = usd_left;
                request.test_limit = Some(0);
                request.rounds = 3;
                request.patience = 2;
                request.minibatch = work.dev.max(1);
                request.demos = file.demos.len().max(4);
                request.run_dir = Some(crate::search::fresh_run_dir(&work.dir));
                request.store = false;
                let run = self.engine.optimize(request).await?;
                case.note(now, format!("search: {}", run.run_dir().display()));
                let s = Search {
                    run_dir: run.run_dir().display().to_string(),
                    algorithm: algorithm.clone(),
                    started_at: now,
                    stopped_at: None,
                    calls_recorded: 0,
                    usd_recorded: 0.0,
                };
                (run, s)
            }
        };
        let algorithm = search.algorithm.clone();
        // Recorded before anything is spent: a process killed during the search leaves its
        // run on the case, and the next pass resumes it.
        search.stopped_at = None;
        case.search = Some(search.clone());
        self.service.save_case(&row(case)?).await?;
        self.progress.say(&format!(
            "case {}: searching ({algorithm}, at most {} metric calls) in {}",
            case.id,
            allowance.min(600),
            search.run_dir
        ));
        let handle = run.start();
        let stop = handle.canceller();
        let token = self.cancel.clone();
        let watch = tokio::spawn(async move {
            token.cancelled().await;
            stop.cancel();
        });
        let id = case.id.clone();
        let result = handle.drive(|p| self.progress.event(&id, &p)).await;
        watch.abort();
        let result = match result {
            Ok(r) => r,
            Err(EngineError::Cancelled { .. }) => {
                // Stopped midway: keep what it spent and the run to resume.
                let (calls, usd) = crate::search::logged(Path::new(&search.run_dir));
                let spend = Spend {
                    at: now,
                    calls: calls.saturating_sub(search.calls_recorded),
                    usd: (usd - search.usd_recorded).max(0.0),
                };
                search.calls_recorded += spend.calls;
                search.usd_recorded += spend.usd;
                search.stopped_at = Some(Utc::now());
                case.spent.push(spend.clone());
                case.search = Some(search.clone());
                case.note(
                    now,
                    format!(
                        "stopped midway after {} model calls: the search in {} resumes next pass",
                        spend.calls, search.run_dir
                    ),
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        case.search = None;
        let o = &result.outcome;
        // A resumed search's totals include what its stopped part already recorded.
        let mut spend = Spend {
            at: now,
            calls: (o.metric_calls + o.test_calls + o.meta_calls + o.proxy_calls + 1)
                .saturating_sub(search.calls_recorded),
            usd: (o.execution_usage.cost_usd.unwrap_or(0.0) + o.meta_usage.cost_usd.unwrap_or(0.0)
                - search.usd_recorded)
                .max(0.0),
        };
        // The candidates above the incumbent on dev, best first, even when the run's own
        // verdict kept the seed: its dev set is a slice's worth of live examples, too small for
        // that test's power; the gate is the held-out check below, per slice. The first that
        // passes it is filed: the best on dev can still trade one slice for another (a
        // per-input demonstration set that helps the failing topic and hurts a neighbour),
        // and the runner-up may not.
        let kept = (!o.kept_seed).then_some((o.winner.as_str(), &result.prompt));
        let candidates = ranked(kept, &o.pool, &file, MAX_CHECKED);
        if candidates.is_empty() {
            case.spent.push(spend);
            let guarded: Vec<&String> = o
                .rejected
                .iter()
                .flat_map(|r| r.why.iter())
                .filter(|w| w.contains("constraint"))
                .collect();
            let guard = match guarded.first() {
                Some(w) => format!(
                    "; the guardrail rejected {} candidates (first: {w})",
                    guarded.len()
                ),
                None => String::new(),
            };
            return self.attempted(
                case,
                now,
                format!(
                    "{algorithm} found nothing better than the incumbent on the failing and \
                     regression sets ({} metric calls){guard}",
                    o.metric_calls
                ),
                Vec::new(),
            );
        }
        let mut refused: Vec<(String, Vec<SliceCheck>)> = Vec::new();
        let mut before = None;
        let mut chosen = None;
        for (id, candidate) in candidates {
            if let Err(why) = guardrail(&incumbent.constraints, &candidate) {
                refused.push((format!("{id}: {why}"), Vec::new()));
                continue;
            }
            // The first candidate is always checked; the others only within the day's
            // allowance.
            let check_calls = work.check.len() as u64;
            if before.is_some() && spend.calls + check_calls > allowance {
                break;
            }
            self.progress.say(&format!(
                "case {}: checking candidate {id} on {} held-out examples ({} calls spent)",
                case.id,
                work.check.len(),
                spend.calls
            ));
            if before.is_none() {
                spend.calls += check_calls;
                before = Some(self.score(&work, "incumbent", &file).await?);
            }
            let a = before.as_ref().expect("scored above");
            let b = self
                .score(&work, &format!("proposal-{id}"), &candidate)
                .await?;
            spend.calls += check_calls;
            let checks = compare(&work, case, a, &b);
            match passes(&checks) {
                Ok(()) => {
                    let cost = b
                        .summary
                        .cost_usd
                        .map(|c| c / b.results.len().max(1) as f64);
                    chosen = Some((id, candidate, checks, cost));
                    break;
                }
                Err(why) => refused.push((format!("{id}: {why}"), checks)),
            }
        }
        case.spent.push(spend);
        let Some((id, winner, checks, cost)) = chosen else {
            let mut refused = refused.into_iter();
            let (first, checks) = refused.next().expect("at least one candidate");
            let rest: Vec<String> = refused.map(|(why, _)| why).collect();
            let why = if rest.is_empty() {
                first
            } else {
                format!("{first}; also refused: {}", rest.join("; "))
            };
            return self.attempted(case, now, why, checks);
        };
        if !refused.is_empty() {
            let why: Vec<&str> = refused.iter().map(|(why, _)| why.as_str()).collect();
            case.note(
                now,
                format!(
                    "{id} is the best on dev that passed the held-out check; refused before it: {}",
                    why.join("; ")
                ),
            );
        }
        let target = &checks[0];
        let version = self
            .file(case, &incumbent, winner, &checks, cost, &model, &algorithm)
            .await?;
        case.proposal = Some(Proposal {
            version: VersionId {
                hash: version.hash.clone(),
                seq: version.seq,
            },
            algorithm,
            run_dir: result.run_dir.display().to_string(),
            checks: checks.clone(),
            cost_per_execution_usd: cost,
        });
        case.state = State::Proposed;
        case.note(
            now,
            format!(
                "proposed {}: {} {:.3} → {:.3} (p = {:.3}), no other slice significantly worse",
                version.reference(),
                target.slice,
                target.before,
                target.after,
                target.p
            ),
        );
        if cfg.policy == Some(crate::config::ShipPolicy::AutoDeploy) {
            if !incumbent.constraints.is_empty() {
                case.note(
                    now,
                    "auto-deploy refused: the prompt has protected constraints; waiting for review",
                );
            } else {
                self.start_canary(case, now, "auto-deploy: no review needed")
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) fn attempted(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        why: String,
        checks: Vec<SliceCheck>,
    ) -> Result<(), AgentError> {
        case.attempts.push(Attempt {
            at: now,
            why: why.clone(),
            checks,
            run_dir: case
                .log
                .iter()
                .rev()
                .find_map(|e| e.what.strip_prefix("search: ").map(String::from)),
        });
        case.state = State::Attempted;
        case.note(now, format!("not filed: {why}"));
        Ok(())
    }

    /// The agent's counts, and the meta model's hypothesis.
    async fn diagnose(
        &self,
        case: &Case,
        file: &PromptFile,
        sets: &Sets,
        meta: &str,
        rejections: &[String],
    ) -> Diagnosis {
        let summary = summarize(case, sets);
        let labels = shown_answers(file);
        let show = |i: &Item| {
            i.inputs
                .values()
                .map(text)
                .collect::<Vec<_>>()
                .join(" · ")
                .chars()
                .take(200)
                .collect::<String>()
        };
        let ctx = json!({
            "prompt": {
                "name": case.prompt,
                "instruction": file.instruction,
                "template": file.template.clone().unwrap_or_default(),
                "labels": labels,
            },
            "slice": case.slice.to_string(),
            "summary": summary,
            "failing": sets.failing.iter().take(6).map(|i| json!({
                "input": show(i), "output": i.output.trim(), "expected": i.expected,
            })).collect::<Vec<_>>(),
            "passing": sets.passing.iter().filter(|i| !i.in_slice(&case.slice)).take(4)
                .map(|i| json!({"input": show(i), "output": i.output.trim()})).collect::<Vec<_>>(),
            "rejections": rejections,
        });
        let hypothesis = match self.engine.hub().model(meta) {
            Err(e) => format!("(no hypothesis: the meta model {meta} cannot be opened: {e})"),
            Ok(model) => match MetaPrompts::builtin()
                .sample(&model, "diagnose", &ctx, 0.0, 7, 1)
                .await
            {
                Ok(mut answers) => match answers.pop() {
                    Some(Ok(a)) if crate::diagnose::copies_example(&a) => {
                        crate::diagnose::COPIED.into()
                    }
                    Some(Ok(a)) if !a.trim().is_empty() => a.trim().to_string(),
                    Some(Err(e)) => format!("(no hypothesis: {e})"),
                    _ => "(the meta model wrote nothing)".into(),
                },
                Err(e) => format!("(no hypothesis: {e})"),
            },
        };
        Diagnosis {
            summary,
            hypothesis,
            model: meta.to_string(),
        }
    }

    /// One prompt on the held-out check set.
    async fn score(
        &self,
        work: &Work,
        name: &str,
        prompt: &PromptFile,
    ) -> Result<metaprompt_eval::Report, AgentError> {
        let path = work.dir.join(format!("{name}.check.toml"));
        write(
            &path,
            prompt
                .to_toml()
                .map_err(|e| AgentError::Data(e.to_string()))?
                .as_bytes(),
        )?;
        let mut scope = Scope::new(&work.task);
        scope.split = "test".into();
        let r = self
            .engine
            .eval(EvalRequest {
                scope,
                prompt: Some(path),
                out: Some(work.dir.join(format!("{name}.check.jsonl"))),
            })
            .wait()
            .await?;
        Ok(r.report)
    }

    /// Add the proposal to the library (proposed, in the review queue) with its evidence.
    #[allow(clippy::too_many_arguments)]
    async fn file(
        &self,
        case: &Case,
        incumbent: &Version,
        mut winner: PromptFile,
        checks: &[SliceCheck],
        cost: Option<f64>,
        model: &str,
        algorithm: &str,
    ) -> Result<Version, AgentError> {
        let diagnosis = case.diagnosis.clone();
        let before = incumbent.file()?;
        winner.name = before.name;
        winner.target_model = before.target_model.or(winner.target_model);
        // It was checked with the incumbent's settings, and is served with them.
        winner.run = before.run.clone();
        winner.rationale = Some(format!(
            "Agent case {} on {}: {}{}",
            case.id,
            case.slice,
            diagnosis
                .as_ref()
                .map_or(String::new(), |d| d.summary.clone()),
            diagnosis
                .as_ref()
                .map_or(String::new(), |d| format!(" Hypothesis: {}", d.hypothesis)),
        ));
        let evidence = checks
            .iter()
            .map(|c| Evidence {
                task: format!("agent:{}", case.id),
                split: format!("live {}", c.slice),
                model: model.to_string(),
                metric: "held-out live outcomes".into(),
                n: c.n as u64,
                mean: c.after,
                low: (c.after - (c.diff - c.low)).clamp(0.0, 1.0),
                high: (c.after + (c.high - c.diff)).clamp(0.0, 1.0),
                baseline: Some(incumbent.hash.clone()),
                diff: Some(c.diff),
                diff_low: Some(c.low),
                diff_high: Some(c.high),
                p_value: Some(c.p),
                cost_per_execution_usd: cost,
                run: None,
                recorded_at: None,
            })
            .collect();
        let mut v = NewVersion::new(&case.prompt, winner, Origin::Optimize, ACTOR);
        v.parents = vec![incumbent.hash.clone()];
        v.checks = Some(json!({"agent_case": case.id, "slices": checks, "diagnosis": diagnosis}));
        v.message = Some(format!(
            "agent: {} on {} ({algorithm})",
            case.id, case.slice
        ));
        let mut added = self
            .library
            .commit(Batch {
                versions: vec![(v, evidence)],
                run: None,
            })
            .await?;
        added
            .pop()
            .map(|a| a.version)
            .ok_or_else(|| AgentError::Data("the library added nothing".into()))
    }
}

/// The answers a prompt's demonstrations show (the fixed ones, or the pool a selector picks each
/// input's from), each once, in order.
pub(super) fn shown_answers(file: &PromptFile) -> Vec<String> {
    let mut answers: Vec<String> = Vec::new();
    if let Some(o) = demo_output(file) {
        for a in file
            .demo_entries()
            .iter()
            .filter_map(|d| d.get(&o).map(text))
        {
            if !answers.contains(&a) {
                answers.push(a);
            }
        }
    }
    answers
}

/// The variable a prompt's demonstrations hold the answer in: the demo key that no
/// example-side template reads.
pub(super) fn demo_output(file: &PromptFile) -> Option<String> {
    let inputs = file.variables();
    file.demo_entries()
        .first()?
        .keys()
        .find(|k| !inputs.contains(k))
        .cloned()
}

/// The failures counted: how many, what was answered, what was expected.
fn summarize(case: &Case, sets: &Sets) -> String {
    let count = |it: &mut dyn Iterator<Item = String>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for s in it {
            *m.entry(s).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .take(4)
            .map(|(s, n)| format!("`{s}` ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let answered = count(&mut sets.failing.iter().map(|i| short(i.output.trim())));
    let expected = count(
        &mut sets
            .failing
            .iter()
            .filter_map(|i| i.expected.as_deref())
            .map(short),
    );
    format!(
        "{} failing inferences on {} ({:.0}% of its scored traffic now, against {:.0}% for the \
         reference); answered {answered}{}.",
        sets.failing.len(),
        case.slice,
        100.0 * case.finding.mean,
        100.0 * case.finding.reference_mean,
        if expected.is_empty() {
            String::new()
        } else {
            format!("; corrected to {expected}")
        }
    )
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(40).collect();
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diagnosis_sees_the_answers_of_fixed_demos_or_of_a_selectors_pool_once_each() {
        let fixed: PromptFile = toml::from_str(
            "name = \"support\"\ntemplate = \"Q: {{ q }}\\nTeam:\"\n\
             [[demos]]\nq = \"a\"\nteam = \"billing\"\n\
             [[demos]]\nq = \"b\"\nteam = \"tech\"\n\
             [[demos]]\nq = \"c\"\nteam = \"billing\"\n",
        )
        .unwrap();
        assert_eq!(shown_answers(&fixed), ["billing", "tech"]);
        let knn: PromptFile = toml::from_str(
            "name = \"support\"\ntemplate = \"Q: {{ q }}\\nTeam:\"\n\
             [selector]\nkind = \"knn\"\nk = 1\nembed = \"words\"\n\
             [[pool]]\nq = \"a\"\nteam = \"other\"\n\
             [[pool]]\nq = \"b\"\nteam = \"tech\"\n\
             [[pool]]\nq = \"c\"\nteam = \"other\"\n",
        )
        .unwrap();
        assert_eq!(shown_answers(&knn), ["other", "tech"]);
        assert!(shown_answers(&PromptFile::from_template("p", "{{ q }}")).is_empty());
    }
}
