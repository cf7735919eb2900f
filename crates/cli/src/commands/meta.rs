//! What the meta-layer commands (`generate`, `translate`) share: settings, console progress,
//! the per-layer cost table, writing results; and `metaprompt meta-prompts`.

use std::sync::Mutex;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metaprompt_engine::Progress;
use metaprompt_llm::LayerUsage;
use metaprompt_optimize::candidate::Costs;
use metaprompt_optimize::meta::{BUILTIN, Origin};
use metaprompt_optimize::{Candidate, MetaPrompts, Status};

use crate::args::{MetaArgs, MetaPromptsCommand};
use crate::format::{self, outln};

/// The system message given on the command line: the text, or `@FILE` for a file's text.
pub fn meta_system(arg: Option<&str>) -> anyhow::Result<Option<String>> {
    Ok(match arg {
        Some(s) => Some(match s.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--meta-system: cannot read {path}"))?,
            None => s.to_string(),
        }),
        None => None,
    })
}

/// The engine's meta-layer options from the command line's.
pub fn options(args: &MetaArgs) -> anyhow::Result<metaprompt_engine::MetaOptions> {
    Ok(metaprompt_engine::MetaOptions {
        meta: args.meta.clone(),
        meta_system: meta_system(args.meta_system.as_deref())?,
        templates: args.templates.clone(),
        judge: args.judge.clone(),
        constraints: args.constraints.clone(),
        seed: args.seed,
    })
}

/// Prints events as they come (to standard error, so `--json` output stays clean), with a
/// progress bar during evaluations.
#[derive(Debug)]
pub struct Console {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Console {
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: Mutex::new(None),
            quiet,
        }
    }

    pub fn event(&self, e: Progress) {
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Progress::Evaluating { label, done, total } => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::with_draw_target(
                        Some(total as u64),
                        ProgressDrawTarget::stderr(),
                    );
                    b.set_style(
                        ProgressStyle::with_template(
                            "  evaluating {msg} {bar:30} {pos}/{len} examples, {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b
                });
                b.set_message(label);
                b.set_position(done as u64);
            }
            Progress::Evaluated { label, summary } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if !self.quiet {
                    eprintln!(
                        "  {label:<6} {} on {} examples ({})",
                        format::score(&summary),
                        summary.examples,
                        format::duration(summary.wall)
                    );
                }
            }
            Progress::Begin { text } => eprintln!("{text}"),
            _ if self.quiet => {}
            Progress::Step { text } => eprintln!("· {text}"),
            Progress::Analysis { text: a } => {
                eprintln!("  analysis:");
                for line in a.lines().filter(|l| !l.trim().is_empty()) {
                    eprintln!("    {}", line.trim_end());
                }
            }
            Progress::Candidate { candidate } => eprintln!("  {}", candidate_line(&candidate)),
            Progress::Round { stats: r } => eprintln!(
                "round {} done · best {:.3} ({}, all of dev) · its candidates {} (mean on their racing examples) · {} proposed, {} rejected · metric calls {} · meta calls {} · {} meta + {} execution",
                r.round,
                r.best,
                r.best_id,
                r.mean.map_or("–".to_string(), |m| format!("{m:.3}")),
                r.proposed,
                r.rejected,
                r.metric_calls,
                r.meta_calls,
                format::cost(r.meta_cost_usd),
                format::cost(r.execution_cost_usd)
            ),
        }
    }
}

/// One line about a candidate: its status and the start of its instruction.
pub fn candidate_line(c: &Candidate) -> String {
    let preview = preview(c);
    match &c.status {
        Status::Accepted => format!("{:<6} written: {preview}", c.id),
        Status::Rejected(why) => format!("{:<6} REJECTED: {}", c.id, why.join("; ")),
        Status::Failed(why) => format!("{:<6} failed: {why}", c.id),
        Status::Duplicate(twin) => format!("{:<6} (the same prompt as {twin})", ""),
    }
}

/// The start of a candidate's instruction, on one line, quoted.
pub fn preview(c: &Candidate) -> String {
    let text = c
        .prompt
        .as_ref()
        .and_then(|p| p.instruction.clone())
        .unwrap_or_default();
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(90) {
        Some((i, _)) => format!("\"{}…\"", &flat[..i]),
        None => format!("\"{flat}\""),
    }
}

fn layer_line(name: &str, u: &LayerUsage) {
    outln!(
        "  {name:<10} {} calls ({} cached, {} failed) · {} in / {} out tokens · {} · model time {}",
        u.calls,
        u.cached,
        u.failed,
        u.input_tokens,
        u.output_tokens,
        format::cost(u.cost_usd),
        format::duration(u.model_time)
    );
}

/// The per-layer cost table, and the amortized view when a prompt was chosen on data.
pub fn print_costs(costs: &Costs, execution_model: &str) {
    outln!("cost by layer");
    layer_line("meta", &costs.meta);
    layer_line("execution", &costs.execution);
    if let Some(per) = &costs.per_execution {
        outln!(
            "  per run    the chosen prompt on {}: {:.0} in / {:.1} out tokens, {} per execution",
            execution_model,
            per.input_tokens,
            per.output_tokens,
            format::cost(per.cost_usd)
        );
        let amortized: Vec<String> = [1_000u64, 100_000]
            .iter()
            .filter_map(|n| {
                costs
                    .amortized(*n)
                    .map(|c| format!("{} over {n} runs", format::cost(Some(c))))
            })
            .collect();
        let free = costs.meta.cost_usd == Some(0.0) && per.cost_usd == Some(0.0);
        if free {
            outln!("  amortized  $0: both layers ran on free (local) models");
        } else if !amortized.is_empty() {
            outln!(
                "  amortized  meta layer {} once; per execution incl. meta: {}",
                format::cost(costs.meta.cost_usd),
                amortized.join(", ")
            );
        }
    }
}

/// `metaprompt meta-prompts list|export`.
pub fn run(cmd: MetaPromptsCommand) -> anyhow::Result<()> {
    match cmd {
        MetaPromptsCommand::List { templates } => {
            let m = MetaPrompts::load(templates.as_deref())?;
            for (name, origin) in m.origins() {
                let forms: Vec<&str> = [
                    (metaprompt_llm::PromptFormat::Chat, "chat"),
                    (metaprompt_llm::PromptFormat::Text, "text"),
                ]
                .into_iter()
                .filter(|(f, _)| m.has_form(name, *f))
                .map(|(_, n)| n)
                .collect();
                // A file of parts only (`form`) is included by the others, never run.
                let forms = if forms.is_empty() {
                    "parts".to_string()
                } else {
                    forms.join("+")
                };
                let from = match origin {
                    Origin::Builtin => "built-in".to_string(),
                    Origin::File(p) => p.display().to_string(),
                };
                outln!("{name:<10} {forms:<10} {from}");
            }
            Ok(())
        }
        MetaPromptsCommand::Export { dir, force } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = |name: &str| dir.join(format!("{name}.toml"));
            if let Some(p) = BUILTIN
                .iter()
                .map(|(n, _)| path(n))
                .find(|p| p.exists() && !force)
            {
                anyhow::bail!("{} exists (use --force to overwrite)", p.display());
            }
            for (name, source) in BUILTIN {
                let path = path(name);
                std::fs::write(&path, source)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                outln!("wrote {}", path.display());
            }
            outln!(
                "edit them, then pass --templates {} (or set METAPROMPT_TEMPLATES)",
                dir.display()
            );
            Ok(())
        }
    }
}
