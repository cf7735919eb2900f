//! `evolve` — Promptbreeder (Fernando et al., 2023, "Promptbreeder: Self-Referential
//! Self-Improvement via Prompt Evolution", arXiv:2309.16797).
//!
//! A population of units, each a task prompt (a pool entry) with its own mutation prompt
//! (kept in the entry's `attrs`). Round 1 initialises the population: the seed plus
//! `per_round` task prompts written from a random thinking style and mutation prompt. Every
//! round then runs `per_round` binary tournaments: two living units meet, fitness is the mean
//! on the first racing rung; the loser dies and the winner's offspring takes its place,
//! produced by one of four operators drawn at random — zero-order (a fresh prompt from the task
//! description), first-order (the winner's mutation prompt applied to its task prompt),
//! estimation of distribution (a new prompt continuing a list of the living ones), or
//! hypermutation (the mutation prompt is improved first, then applied; the offspring inherits
//! the new one). At the end of a round the fittest living units race on the whole dev split.
//! Lamarckian mutation, crossover and context shuffling are not implemented.

use async_trait::async_trait;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::json;

use crate::algo::Optimizer;
use crate::brief::Frame;
use crate::run::{Ctx, Halt};

/// Thinking styles that seed the population's diversity (in our words, after the paper's list).
const STYLES: &[&str] = &[
    "Think step by step.",
    "Look at the problem from the reader's side.",
    "Focus on the words that decide the answer.",
    "Consider what a careless reader would get wrong.",
    "Make the simplest rule that explains the examples.",
    "Use an analogy to something familiar.",
];
/// Initial mutation prompts.
const MUTATIONS: &[&str] = &[
    "Rewrite the instruction so that it is clearer and more specific.",
    "Make the instruction shorter while keeping what matters.",
    "Change the instruction so that a beginner would follow it correctly.",
    "Add the one detail the instruction is missing.",
    "Say the instruction differently, as an expert would.",
    "Rewrite the instruction to name the exact answer expected.",
];

#[derive(Debug, Default)]
pub struct Evolve;

fn alive(ctx: &Ctx<'_>) -> Vec<usize> {
    (0..ctx.pool.len())
        .filter(|&i| ctx.pool[i].attrs.get("alive").is_some_and(|a| a == "yes"))
        .collect()
}

fn mutation_of(ctx: &Ctx<'_>, i: usize) -> String {
    ctx.pool[i]
        .attrs
        .get("mutation")
        .cloned()
        .unwrap_or_else(|| MUTATIONS[0].to_string())
}

#[async_trait]
impl Optimizer for Evolve {
    fn name(&self) -> &'static str {
        "evolve"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        let rung = ctx.rung(ctx.settings.minibatch.min(ctx.problem.dev.len()));
        let frame = Frame::of(&ctx.pool[0].prompt, &ctx.problem.brief);
        if alive(ctx).is_empty() {
            let m = MUTATIONS
                .choose(&mut ctx.rng)
                .copied()
                .unwrap_or(MUTATIONS[0]);
            ctx.pool[0].attrs.insert("alive".into(), "yes".into());
            ctx.pool[0].attrs.insert("mutation".into(), m.into());
            for _ in 0..ctx.settings.per_round {
                let style = *STYLES.choose(&mut ctx.rng).unwrap_or(&STYLES[0]);
                let mutation = *MUTATIONS.choose(&mut ctx.rng).unwrap_or(&MUTATIONS[0]);
                let vars = json!({
                    "task": ctx.problem.brief, "mode": "init", "style": style,
                    "mutation": mutation, "instruction": "", "population": [],
                    "constraints": ctx.problem.constraints,
                });
                let Some(answer) = ctx.meta("evolve", &vars, 1).await?.pop() else {
                    continue;
                };
                born(
                    ctx,
                    &answer,
                    &frame,
                    vec!["p0".into()],
                    "evolve-init",
                    mutation,
                )
                .await;
            }
        }
        for _ in 0..ctx.settings.per_round {
            let living = alive(ctx);
            if living.len() < 2 {
                break;
            }
            let pair: Vec<usize> = living.choose_multiple(&mut ctx.rng, 2).copied().collect();
            let (a, b) = (pair[0], pair[1]);
            ctx.score(a, &rung).await?;
            ctx.score(b, &rung).await?;
            // Fitness on the examples of the rung scored for both; a tie keeps `a`.
            let b_fitter = matches!(
                ctx.paired_means(&[a, b], &rung)[..],
                [fa, Some(fb)] if fa.is_none_or(|fa| fb > fa)
            );
            let (winner, loser) = if b_fitter { (b, a) } else { (a, b) };
            ctx.pool[loser].attrs.insert("alive".into(), "no".into());
            let mut mutation = mutation_of(ctx, winner);
            let instruction = ctx.pool[winner]
                .prompt
                .instruction
                .clone()
                .unwrap_or_default();
            let (mode, op) = match ctx.rng.random_range(0..4) {
                0 => ("zero", "evolve-zero-order"),
                1 => ("first", "evolve-first-order"),
                2 => ("eda", "evolve-eda"),
                _ => ("first", "evolve-hypermutation"),
            };
            if op == "evolve-hypermutation" {
                let vars = json!({"task": ctx.problem.brief, "mutation": mutation});
                if let Some(m) = ctx.meta("hyper", &vars, 1).await?.pop() {
                    let (m, _) = crate::candidate::instruction_from(&m);
                    if !m.trim().is_empty() {
                        mutation = m;
                    }
                }
            }
            let population: Vec<String> = alive(ctx)
                .iter()
                .filter_map(|&i| ctx.pool[i].prompt.instruction.clone())
                .collect();
            let vars = json!({
                "task": ctx.problem.brief, "mode": mode, "style": "",
                "mutation": mutation, "instruction": instruction, "population": population,
                "constraints": ctx.problem.constraints,
            });
            let parents = vec![ctx.pool[winner].id.clone()];
            let Some(answer) = ctx.meta("evolve", &vars, 1).await?.pop() else {
                continue;
            };
            if born(ctx, &answer, &frame, parents, op, &mutation)
                .await
                .is_none()
            {
                // No viable offspring: the loser's place stays with the winner's line.
                ctx.pool[loser].attrs.insert("alive".into(), "yes".into());
            }
        }
        let mut contenders = alive(ctx);
        for &i in &contenders {
            ctx.score(i, &rung).await?;
        }
        contenders.sort_unstable();
        let mut contenders = ctx.rank_on(&contenders, &rung);
        contenders.truncate(2);
        let best = ctx.best();
        if !contenders.contains(&best) {
            contenders.push(best);
        }
        ctx.race(contenders, 1).await?;
        Ok(())
    }
}

/// A new living unit from a meta answer, carrying `mutation`; `None` when the answer held no
/// usable prompt, was rejected, or duplicates a living unit.
async fn born(
    ctx: &mut Ctx<'_>,
    answer: &str,
    frame: &Frame,
    parents: Vec<String>,
    op: &str,
    mutation: &str,
) -> Option<usize> {
    let i = ctx.propose_instruction(answer, frame, parents, op).await?;
    if ctx.pool[i].attrs.get("alive").is_some_and(|a| a == "yes") {
        return None;
    }
    ctx.pool[i].attrs.insert("alive".into(), "yes".into());
    ctx.pool[i].attrs.insert("mutation".into(), mutation.into());
    Some(i)
}
