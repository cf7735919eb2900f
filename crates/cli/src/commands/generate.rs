//! `metaprompt generate`: a prompt from a task description.

use metaprompt_eval::{Example, Task};
use metaprompt_llm::Provider;
use metaprompt_optimize::brief::pick_demos;
use metaprompt_optimize::{Brief, Evaluation, Frame, GenerateSpec, Generated, Layers};

use crate::args::{GenerateArgs, Global};
use crate::commands::eval::{self as evalcmd};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::outln;

/// Examples shown to the meta model (at least this many when the train split has them).
const SHOWN: usize = 4;

pub async fn run(global: &Global, args: GenerateArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let task = args.task.as_deref().map(Task::load).transpose()?;
    let mut brief = match (&task, &args.description) {
        (Some(t), _) => Brief::from_task(t),
        (None, Some(d)) => Brief::from_description(d),
        (None, None) => anyhow::bail!(
            "say what the prompt must do: `metaprompt generate \"<task description>\"`, or give --task"
        ),
    };
    if let Some(d) = &args.description {
        if d.trim().is_empty() {
            anyhow::bail!("the task description is empty");
        }
        brief.description = d.trim().to_string();
    }
    let hub = context::hub(global).await?;
    let models = task.as_ref().map(|t| &t.config.models);
    let default_model = metaprompt_eval::task::ModelsConfig::default();
    let models = models.unwrap_or(&default_model);
    let meta_model = hub.model(args.meta.meta.as_deref().unwrap_or(&models.meta))?;
    let execution = hub.model(args.model.as_deref().unwrap_or(&models.execution))?;
    let layers = Layers::new(meta_model, execution);
    let meta_prompts = meta::meta_prompts(&args.meta, task.as_ref())?;
    let guard = meta::guard(&args.meta, &hub, &layers)?;
    let constraints = meta::constraints(
        task.as_ref(),
        task.as_ref().map(|t| &t.seed_prompt),
        &args.meta.constraints,
    );

    // Demonstrations and the examples the meta model sees come from the train split.
    let train: Vec<Example> = match &task {
        Some(t) => t.examples("train").unwrap_or_default(),
        None => Vec::new(),
    };
    let picked = pick_demos(&brief, &train, args.demos.max(SHOWN), args.meta.seed);
    let shown = picked.iter().take(SHOWN).map(|e| brief.show(e)).collect();
    let frame = match &task {
        Some(t) => Frame::of(&t.seed_prompt, &brief),
        None => Frame::fresh(&brief),
    };
    let demos: Vec<Example> = picked.iter().take(args.demos).cloned().collect();
    let frame = if demos.is_empty() && args.demos > 0 {
        frame // no train data: the seed's own demonstrations, if any, stay
    } else {
        frame.with_demos(&brief, &demos)
    };
    let evaluation = match (&task, args.no_eval) {
        (Some(t), false) => Some(Evaluation {
            scorer: evalcmd::scorer(t, &hub)?,
            examples: evalcmd::examples(t, &args.once.split, args.once.limit, None)?,
            options: evalcmd::options(t),
            split: args.once.split.clone(),
        }),
        _ => None,
    };
    let name = args.name.clone().unwrap_or_else(|| match &task {
        Some(t) => format!("{}-generated", t.config.name),
        None => brief.name.clone(),
    });
    let spec = GenerateSpec {
        brief,
        shown,
        frame,
        constraints,
        candidates: args.candidates,
        meta_temperature: args
            .once
            .meta_temperature
            .unwrap_or(models.meta_temperature),
        seed: args.meta.seed,
        name: name.clone(),
        seed_prompt: task.as_ref().map(|t| t.seed_prompt.clone()),
    };
    let console = Console::new(args.meta.json);
    eprintln!(
        "generate · {} · meta {} ({}) · execution {}{}",
        spec.brief.name,
        layers.meta.info().name,
        form(layers.meta.as_ref()),
        layers.execution.info().name,
        if spec.constraints.is_empty() {
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
        }
    );
    let result = metaprompt_optimize::generate(
        &meta_prompts,
        &layers,
        &guard,
        &spec,
        evaluation.as_ref(),
        &|e| console.event(e),
    )
    .await;
    evalcmd::close(&hub).await;
    let generated = result?;
    let Some(prompt) = generated.prompt() else {
        print_candidates(&generated);
        meta::print_costs(&generated.costs, layers.execution.as_ref());
        anyhow::bail!(
            "no candidate passed the checks ({} written); see the reasons above",
            generated.candidates.len()
        );
    };
    let path = meta::out_path(args.once.out.as_deref(), task.as_ref(), &name);
    let report_path = meta::write_outputs(&path, &prompt, &generated)?;
    let library_name = args.name.clone().unwrap_or_else(|| match &task {
        Some(t) => t.config.name.clone(),
        None => generated.task.name.clone(),
    });
    let seed_why = args
        .task
        .as_ref()
        .map(|p| format!("the seed prompt of {}", p.display()))
        .unwrap_or_default();
    let batch = library::one_shot_batch(
        global,
        &library::OneShot {
            kind: metaprompt_registry::Origin::Generate,
            name: &library_name,
            task: task.as_ref(),
            task_path: args.task.as_deref(),
            baseline: task
                .as_ref()
                .map(|t| (&t.seed_prompt, generated.seed_score.as_ref(), seed_why)),
            candidates: &generated.candidates,
            chosen: generated.chosen,
            prompt: &prompt,
            versus: generated.versus_seed.as_ref().map(|c| &c.paired),
            split: generated.split.as_deref().unwrap_or(&args.once.split),
            model: &generated.execution_model,
            costs: &generated.costs,
            config: serde_json::json!({
                "meta_model": generated.meta_model,
                "candidates": args.candidates,
                "demos": args.demos,
                "seed": args.meta.seed,
            }),
            started_at,
        },
    );
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(&generated)?);
        library::store_result(global, batch, true).await?;
        return Ok(());
    }
    print_candidates(&generated);
    if let Some(v) = &generated.versus_seed {
        outln!(
            "vs seed    {:+.3} [{:+.3}, {:+.3}], paired bootstrap p = {:.4}",
            v.paired.diff,
            v.paired.low,
            v.paired.high,
            v.paired.p_value
        );
    }
    meta::print_costs(&generated.costs, layers.execution.as_ref());
    outln!("prompt     {}", path.display());
    outln!("report     {}", report_path.display());
    library::store_result(global, batch, false).await?;
    if let Some(t) = &args.task {
        outln!(
            "next       metaprompt eval {} --prompt {} --split test",
            t.display(),
            path.display()
        );
    }
    Ok(())
}

fn form(p: &dyn Provider) -> &'static str {
    match p.info().format {
        metaprompt_llm::PromptFormat::Chat => "chat meta-prompts",
        metaprompt_llm::PromptFormat::Text => "completion meta-prompts",
    }
}

fn print_candidates(g: &Generated) {
    let split = g.split.as_deref().unwrap_or("dev");
    outln!("candidates (score on {split}, 95% CI)");
    if let Some(s) = &g.seed_score {
        outln!(
            "  seed   {:.3} [{:.3}, {:.3}]  the task's seed prompt ({})",
            s.score.mean,
            s.score.low,
            s.score.high,
            s.prompt
        );
    }
    for (i, c) in g.candidates.iter().enumerate() {
        let mark = if Some(i) == g.chosen { "*" } else { " " };
        match &c.score {
            Some(s) => outln!(
                "{mark} {:<6} {:.3} [{:.3}, {:.3}]  {}",
                c.id,
                s.score.mean,
                s.score.low,
                s.score.high,
                meta::preview(c)
            ),
            None => outln!("{mark} {}", meta::candidate_line(c)),
        }
    }
}
