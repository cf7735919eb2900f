//! `metaprompt translate`: a prompt rewritten for another model, with parity on data.

use metaprompt_eval::{PromptFile, Task};
use metaprompt_optimize::brief::{pick_demos, slug};
use metaprompt_optimize::{Brief, Evaluation, Layers, TranslateSpec, Translated};

use crate::args::{Global, TranslateArgs};
use crate::commands::eval::{self as evalcmd};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::outln;

pub async fn run(global: &Global, args: TranslateArgs) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let task = Task::load(&args.task)?;
    let source = PromptFile::load(&args.prompt)?;
    let source_file = source.clone();
    let hub = context::hub(global).await?;
    let brief = Brief::from_task(&task);
    let from = args
        .from
        .clone()
        .or_else(|| source.target_model.clone())
        .unwrap_or_else(|| task.config.models.execution.clone());
    let meta_model = hub.model(
        args.meta
            .meta
            .as_deref()
            .unwrap_or(&task.config.models.meta),
    )?;
    let layers = Layers::new(meta_model, hub.model(&args.to)?);
    let source_model = layers.also_execution(hub.model(&from)?);
    let meta_prompts = meta::meta_prompts(&args.meta, Some(&task))?;
    let guard = meta::guard(&args.meta, &hub, &layers)?;
    let constraints = meta::constraints(Some(&task), Some(&source), &args.meta.constraints);
    let train = task.examples("train").unwrap_or_default();
    let shown = pick_demos(&brief, &train, 4, args.meta.seed)
        .iter()
        .map(|e| brief.show(e))
        .collect();
    let evaluation = Evaluation {
        scorer: evalcmd::scorer(&task, &hub)?,
        examples: evalcmd::examples(&task, &args.once.split, args.once.limit, None)?,
        options: evalcmd::options(&task),
        split: args.once.split.clone(),
    };
    let target_name = layers.execution.info().name.clone();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-for-{}", source.name, slug(&target_name)));
    let spec = TranslateSpec {
        brief,
        shown,
        constraints,
        source: source_file.clone(),
        variants: args.variants,
        meta_temperature: args
            .once
            .meta_temperature
            .unwrap_or(task.config.models.meta_temperature),
        seed: args.meta.seed,
        name: name.clone(),
    };
    eprintln!(
        "translate · {} · from {} ({}) to {} ({}) · meta {}",
        args.prompt.display(),
        source_model.info().name,
        form(source_model.as_ref()),
        target_name,
        form(layers.execution.as_ref()),
        layers.meta.info().name
    );
    let console = Console::new(args.meta.json);
    let result = metaprompt_optimize::translate(
        &meta_prompts,
        &layers,
        &source_model,
        &guard,
        &spec,
        &evaluation,
        &|e| console.event(e),
    )
    .await;
    evalcmd::close(&hub).await;
    let translated = result?;
    let Some(prompt) = translated.prompt() else {
        print_table(&translated);
        meta::print_costs(&translated.costs, layers.execution.as_ref());
        anyhow::bail!("no variant passed the checks; see the reasons above");
    };
    let path = meta::out_path(args.once.out.as_deref(), Some(&task), &name);
    let report_path = meta::write_outputs(&path, &prompt, &translated)?;
    let source_why = format!(
        "the source prompt {}, written for {}",
        args.prompt.display(),
        translated.source_model
    );
    let batch = library::one_shot_batch(
        global,
        &library::OneShot {
            kind: metaprompt_registry::Origin::Translate,
            name: &name,
            task: Some(&task),
            task_path: Some(&args.task),
            baseline: Some((&source_file, Some(&translated.source_score), source_why)),
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
                "variants": args.variants,
                "seed": args.meta.seed,
            }),
            started_at,
        },
    );
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(&translated)?);
        library::store_result(global, batch, true).await?;
        return Ok(());
    }
    print_table(&translated);
    if let Some(p) = &translated.parity {
        outln!(
            "parity     target - source {:+.3}  95% CI [{:+.3}, {:+.3}]  paired bootstrap p = {:.4} ({} examples)",
            p.paired.diff,
            p.paired.low,
            p.paired.high,
            p.paired.p_value,
            p.paired.n
        );
        let verdict = if p.paired.low > 0.0 {
            "the translation scores significantly higher on the target than the source on its model"
        } else if p.paired.high < 0.0 {
            "the translation scores significantly lower on the target: parity not reached"
        } else {
            "no significant difference at p < 0.05; the interval bounds the gap"
        };
        outln!("verdict    {verdict}");
    }
    meta::print_costs(&translated.costs, layers.execution.as_ref());
    outln!("prompt     {}", path.display());
    outln!("report     {}", report_path.display());
    library::store_result(global, batch, false).await?;
    Ok(())
}

fn form(p: &dyn metaprompt_llm::Provider) -> &'static str {
    match p.info().format {
        metaprompt_llm::PromptFormat::Chat => "chat",
        metaprompt_llm::PromptFormat::Text => "text",
    }
}

fn print_table(t: &Translated) {
    outln!("scores on {} (95% CI)", t.split);
    let s = &t.source_score;
    outln!(
        "  source {:.3} [{:.3}, {:.3}]  on {}",
        s.score.mean,
        s.score.low,
        s.score.high,
        t.source_model
    );
    for (i, c) in t.candidates.iter().enumerate() {
        let mark = if Some(i) == t.chosen { "*" } else { " " };
        match &c.score {
            Some(s) => outln!(
                "{mark} {:<6} {:.3} [{:.3}, {:.3}]  on {}: {}",
                c.id,
                s.score.mean,
                s.score.low,
                s.score.high,
                t.target_model,
                meta::preview(c)
            ),
            None => outln!("{mark} {}", meta::candidate_line(c)),
        }
    }
}
