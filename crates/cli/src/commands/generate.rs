//! `metaprompt generate`: a prompt from a task description.

use metaprompt_engine::{GenerateRequest, OnceOptions};
use metaprompt_optimize::Generated;

use crate::args::{GenerateArgs, Global, OnceArgs};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::outln;

/// The engine's single-pass options from the command line's.
pub fn once(args: &OnceArgs) -> OnceOptions {
    OnceOptions {
        meta_temperature: args.meta_temperature,
        out: args.out.clone(),
        split: args.split.clone(),
        limit: args.limit,
    }
}

pub async fn run(global: &Global, args: GenerateArgs) -> anyhow::Result<()> {
    if args.task.is_none() && args.description.is_none() {
        anyhow::bail!(
            "say what the prompt must do: `metaprompt generate \"<task description>\"`, or give --task"
        );
    }
    let request = GenerateRequest {
        description: args.description.clone(),
        task: args.task.clone(),
        candidates: args.candidates,
        demos: args.demos,
        model: args.model.clone(),
        name: args.name.clone(),
        no_eval: args.no_eval,
        once: once(&args.once),
        meta: meta::options(&args.meta)?,
    };
    let engine = context::engine(global).await?;
    let console = Console::new(args.meta.json);
    let result = engine.generate(request).drive(|p| console.event(p)).await;
    engine.close().await;
    let result = result?;
    let generated = &result.generated;
    let Some(written) = &result.written else {
        print_candidates(generated);
        meta::print_costs(&generated.costs, &generated.execution_model);
        anyhow::bail!(
            "no candidate passed the checks ({} written); see the reasons above",
            generated.candidates.len()
        );
    };
    // Without data nothing was measured: say so, and that the kept candidate is not the best
    // of anything.
    let unscored = (!generated.scored).then(|| {
        let kept = generated
            .chosen
            .map_or("none", |i| generated.candidates[i].id.as_str());
        format!(
            "{}: candidates are unscored; {kept} kept as written (the first that passed the checks), stored without evidence",
            no_data_reason(&args)
        )
    });
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(generated)?);
        if let Some(u) = &unscored {
            eprintln!("unscored   {u}");
        }
        library::print_stored_with(&result.stored, true, unscored.is_some());
        return Ok(());
    }
    print_candidates(generated);
    if let Some(u) = &unscored {
        outln!("unscored   {u}");
    }
    if let Some(s) = &generated.shorter {
        outln!("shorter    kept: {}", s.describe());
    }
    if let Some(v) = &generated.versus_seed {
        outln!(
            "vs seed    {:+.3} [{:+.3}, {:+.3}], paired bootstrap p = {:.4}",
            v.paired.diff,
            v.paired.low,
            v.paired.high,
            v.paired.p_value
        );
    }
    meta::print_costs(&generated.costs, &generated.execution_model);
    outln!("prompt     {}", written.prompt.display());
    outln!("report     {}", written.report.display());
    library::print_stored_with(&result.stored, false, unscored.is_some());
    if let Some(t) = &args.task {
        outln!(
            "next       metaprompt eval {} --prompt {} --split test",
            t.display(),
            written.prompt.display()
        );
    }
    Ok(())
}

/// Why there was nothing to score on.
fn no_data_reason(args: &GenerateArgs) -> &'static str {
    if args.no_eval {
        "no data (--no-eval)"
    } else {
        "no data (no --task)"
    }
}

/// The candidates: under a score header with the best marked when they were scored on data;
/// otherwise listed as written, with nothing marked.
fn print_candidates(g: &Generated) {
    if !g.scored {
        outln!("candidates (unscored: no data)");
        for c in &g.candidates {
            outln!("  {}", meta::candidate_line(c));
        }
        return;
    }
    let split = g.split.as_deref().unwrap_or("dev");
    outln!("candidates (score on {split}, 95% CI)");
    if let Some(s) = &g.seed_score {
        outln!(
            "  seed   {}  the task's seed prompt ({})",
            crate::format::score(s),
            s.prompt
        );
    }
    for (i, c) in g.candidates.iter().enumerate() {
        let mark = if Some(i) == g.chosen { "*" } else { " " };
        match &c.score {
            Some(s) => outln!(
                "{mark} {:<6} {}  {}",
                c.id,
                crate::format::score(s),
                meta::preview(c)
            ),
            None => outln!("{mark} {}", meta::candidate_line(c)),
        }
    }
}
