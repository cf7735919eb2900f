//! `metaprompt translate`: a prompt rewritten for another model, with parity on data.

use metaprompt_engine::TranslateRequest;
use metaprompt_optimize::Translated;

use crate::args::{Global, TranslateArgs};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::outln;

pub async fn run(global: &Global, args: TranslateArgs) -> anyhow::Result<()> {
    let request = TranslateRequest {
        task: args.task.clone(),
        prompt: args.prompt.clone(),
        to: args.to.clone(),
        from: args.from.clone(),
        variants: args.variants,
        name: args.name.clone(),
        once: crate::commands::generate::once(&args.once),
        meta: meta::options(&args.meta)?,
    };
    let engine = context::engine(global).await?;
    let console = Console::new(args.meta.json);
    let result = engine.translate(request).drive(|p| console.event(p)).await;
    engine.close().await;
    let result = result?;
    let translated = &result.translated;
    let Some(written) = &result.written else {
        print_table(translated);
        meta::print_costs(&translated.costs, &translated.target_model);
        anyhow::bail!("no variant passed the checks; see the reasons above");
    };
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(translated)?);
        library::print_stored(&result.stored, true);
        return Ok(());
    }
    print_table(translated);
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
    meta::print_costs(&translated.costs, &translated.target_model);
    outln!("prompt     {}", written.prompt.display());
    outln!("report     {}", written.report.display());
    library::print_stored(&result.stored, false);
    Ok(())
}

fn print_table(t: &Translated) {
    outln!("scores on {} (95% CI)", t.split);
    let s = &t.source_score;
    outln!(
        "  source {}  on {}",
        crate::format::score(s),
        t.source_model
    );
    for (i, c) in t.candidates.iter().enumerate() {
        let mark = if Some(i) == t.chosen { "*" } else { " " };
        match &c.score {
            Some(s) => outln!(
                "{mark} {:<6} {}  on {}: {}",
                c.id,
                crate::format::score(s),
                t.target_model,
                meta::preview(c)
            ),
            None => outln!("{mark} {}", meta::candidate_line(c)),
        }
    }
}
