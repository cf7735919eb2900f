//! `fewshot`: search over demonstrations (the selection half of DSPy's few-shot optimizers,
//! for base models where demonstrations matter most: on the embedded model they take SST-2 from
//! chance to 85–90%). The instruction and layout of the best prompt stay; its demonstrations
//! change.
//!
//! Round 1 samples `per_round` label-balanced sets of `demos` training examples — at least one
//! per label of a classification (measured on TREC: four demonstrations for six labels scored
//! below the zero-shot prompt, the labels never shown were never predicted) — (balance
//! matters: DSPy's bootstrap, measured on this model, kept only positive demos and always
//! answered "positive"), plus one *bootstrapped* set: the current prompt (the teacher) runs on
//! a sample of training examples, and demonstrations are drawn, label-balanced, from those whose
//! output the metric passes, showing the teacher's own output (BootstrapFewShot's criterion;
//! those teacher calls count as metric calls). Later rounds mutate the best set — which
//! demonstrations, how many, and in what order — one move per candidate, in turn:
//!
//! - **swap** one demonstration for another training example: of the same label in a
//!   classification (the balance stays), any example not shown yet in a generation task (whose
//!   outputs rarely repeat, so a same-output swap would have nothing to propose);
//! - **add** one (a training example not shown yet), while the prompt stays within the
//!   demonstration budget: half the execution model's context, at most [`DEMO_TOKENS`] tokens
//!   (estimated at 4 bytes a token, rendered for the first dev example);
//! - **drop** one, down to one per label (one, for generation);
//! - **reorder** them (a fresh order; recency matters to small models).
//!
//! A move that does not apply (nothing to add within the budget, nothing left to drop) gives
//! way to a swap. Candidates race against the incumbent; the best survives. No meta calls.
//!
//! A prompt whose demonstrations leave out a label of the classification first gets candidates
//! that show it (one more demonstration, of a missing label, from the training set).
//!
//! Once per run, the best fixed set also gets a **nearest-neighbour** rival: the same layout
//! and instruction, the same number of demonstrations, picked per input from a pool of the
//! training examples (at most [`POOL_MAX`]) by the execution model's embeddings when it has
//! them, else by words (see `metaprompt_eval::select`). While such a prompt leads, rounds try
//! one fewer and one more neighbour (within the demonstration budget) and the other embedding.

use async_trait::async_trait;
use metaprompt_eval::select::{Embedding, Selector};
use metaprompt_eval::{Example, PromptFile};
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::algo::Optimizer;
use crate::brief::{Frame, pick_demos};
use crate::run::{Ctx, Halt, StopReason};

/// The most prompt tokens the demonstrations may grow a prompt to (see the module docs).
pub const DEMO_TOKENS: usize = 2048;

/// One demonstration: the example's variables, output included.
pub(crate) type Demo = std::collections::BTreeMap<String, serde_json::Value>;

/// The most training examples a nearest-neighbour pool holds (the first ones of the split).
pub const POOL_MAX: usize = 256;

/// The moves of later rounds, in turn.
const MOVES: [&str; 4] = ["swap", "add", "drop", "reorder"];

#[derive(Debug, Default)]
pub struct FewShot;

#[async_trait]
impl Optimizer for FewShot {
    fn name(&self) -> &'static str {
        "fewshot"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        demo_round(ctx).await
    }
}

/// One round of demonstration search around the current best (also used by `auto`).
pub(crate) async fn demo_round(ctx: &mut Ctx<'_>) -> Result<(), Halt> {
    if ctx.problem.train.is_empty() || ctx.settings.demos == 0 {
        return Err(StopReason::Exhausted.into());
    }
    let best = ctx.best();
    let base = ctx.pool[best].prompt.clone();
    let brief = ctx.problem.brief.clone();
    let frame = Frame::of(&base, &brief);
    let output = brief.output.clone();
    if base.selector.is_some() {
        return knn_round(ctx, best, &base, &frame).await;
    }
    let mut proposed = Vec::new();
    for j in 0..ctx.settings.per_round as usize {
        let mut op = "fewshot";
        let demos = if base.demos.is_empty() {
            let seed = ctx.rng.random();
            let k = ctx.settings.demos.max(brief.labels.len());
            pick_demos(&brief, &ctx.problem.train, k, seed)
                .iter()
                .map(|e| demo_vars(&brief, e))
                .collect()
        } else if let Some(demos) = cover_label(ctx, &base.demos, &output) {
            demos
        } else {
            let (name, demos) =
                match mutate(ctx, &base, &frame, MOVES[(ctx.round + j) % MOVES.len()]) {
                    Some(m) => m,
                    None => match mutate(ctx, &base, &frame, "swap") {
                        Some(m) => m,
                        None => continue,
                    },
                };
            op = name;
            demos
        };
        let mut frame = frame.clone();
        frame.demos = demos;
        let prompt = frame.prompt_with(
            &base.name,
            base.instruction.as_deref(),
            &ctx.problem.constraints,
        );
        offer(ctx, prompt, best, op, &mut proposed).await;
    }
    // One nearest-neighbour rival per run, as many neighbours as the best set shows.
    if !base.demos.is_empty()
        && ctx.problem.train.len() > base.demos.len()
        && !ctx.pool.iter().any(|e| e.prompt.selector.is_some())
    {
        let prompt = knn_prompt(ctx, &base, &frame, base.demos.len(), knn_embedding(ctx));
        offer(ctx, prompt, best, "fewshot-knn", &mut proposed).await;
    }
    if base.demos.is_empty()
        && let Some(i) = bootstrap(ctx, best, &frame).await?
        && i != best
        && !proposed.contains(&i)
    {
        proposed.push(i);
    }
    if proposed.is_empty() {
        return Err(StopReason::Exhausted.into());
    }
    proposed.push(best);
    ctx.race(proposed, 1).await?;
    Ok(())
}

/// Proposes `prompt` as a child of entry `best` and adds it to `proposed` when it is a new
/// entry (a duplicate of the pool proposes nothing).
async fn offer(
    ctx: &mut Ctx<'_>,
    prompt: PromptFile,
    best: usize,
    op: &'static str,
    proposed: &mut Vec<usize>,
) {
    let parent = vec![ctx.pool[best].id.clone()];
    if let Some(i) = ctx.propose(prompt, parent, op, "").await
        && i != best
        && !proposed.contains(&i)
    {
        proposed.push(i);
    }
}

/// What nearest neighbours are compared by: the execution model's embeddings when it has them,
/// else words.
pub(crate) fn knn_embedding(ctx: &Ctx<'_>) -> Embedding {
    if ctx.layers.execution.can_embed() {
        Embedding::Model
    } else {
        Embedding::Words
    }
}

/// `base`'s layout and instruction with `k` demonstrations picked per input from a pool of the
/// training examples.
pub(crate) fn knn_prompt(
    ctx: &Ctx<'_>,
    base: &PromptFile,
    frame: &Frame,
    k: usize,
    embed: Embedding,
) -> PromptFile {
    let brief = &ctx.problem.brief;
    let mut frame = frame.clone();
    frame.demos.clear();
    frame.pool = ctx
        .problem
        .train
        .iter()
        .take(POOL_MAX)
        .map(|e| demo_vars(brief, e))
        .collect();
    frame.selector = Some(Selector::knn(k.clamp(1, frame.pool.len().max(1)), embed));
    frame.prompt_with(
        &base.name,
        base.instruction.as_deref(),
        &ctx.problem.constraints,
    )
}

/// A round around a nearest-neighbour leader: one neighbour fewer, one more (within the
/// demonstration budget and the pool), the other embedding.
async fn knn_round(
    ctx: &mut Ctx<'_>,
    best: usize,
    base: &PromptFile,
    frame: &Frame,
) -> Result<(), Halt> {
    let Some(selector) = base.selector.clone() else {
        return Err(StopReason::Exhausted.into());
    };
    let mut variants: Vec<(&'static str, Selector)> = Vec::new();
    if selector.k > 1 {
        variants.push((
            "fewshot-knn-fewer",
            Selector {
                k: selector.k - 1,
                ..selector.clone()
            },
        ));
    }
    if selector.k < base.pool.len() {
        let more = Selector {
            k: selector.k + 1,
            ..selector.clone()
        };
        let mut grown = base.clone();
        grown.selector = Some(more.clone());
        if demo_budget(ctx)
            >= ctx.prompt_chars(&grown) / metaprompt_eval::evaluator::BYTES_PER_TOKEN
        {
            variants.push(("fewshot-knn-more", more));
        }
    }
    let other = match selector.embed {
        Embedding::Model => Embedding::Words,
        Embedding::Words => Embedding::Model,
    };
    if other == Embedding::Words || ctx.layers.execution.can_embed() {
        variants.push((
            "fewshot-knn-embed",
            Selector {
                embed: other,
                ..selector.clone()
            },
        ));
    }
    let mut proposed = Vec::new();
    for (op, s) in variants {
        let mut frame = frame.clone();
        frame.selector = Some(s);
        let prompt = frame.prompt_with(
            &base.name,
            base.instruction.as_deref(),
            &ctx.problem.constraints,
        );
        offer(ctx, prompt, best, op, &mut proposed).await;
    }
    if proposed.is_empty() {
        return Err(StopReason::Exhausted.into());
    }
    proposed.push(best);
    ctx.race(proposed, 1).await?;
    Ok(())
}

/// The output a training example shows (its first accepted answer).
pub(crate) fn output_of(e: &Example, output: &str) -> Option<serde_json::Value> {
    e.expected
        .as_ref()
        .map(metaprompt_eval::dataset::first_answer)
        .or_else(|| e.vars.get(output).cloned())
}

/// `base`'s demonstrations after one move (`swap`, `add`, `drop`, `reorder`), with the move's
/// operation name; `None` when the move does not apply.
pub(crate) fn mutate(
    ctx: &mut Ctx<'_>,
    base: &metaprompt_eval::PromptFile,
    frame: &Frame,
    how: &str,
) -> Option<(&'static str, Vec<Demo>)> {
    let brief = ctx.problem.brief.clone();
    let output = brief.output.as_str();
    let mut demos = base.demos.clone();
    let classification = !brief.labels.is_empty();
    // Training examples whose inputs no demonstration shows yet.
    let unshown: Vec<&Example> = {
        let shown: Vec<Demo> = demos
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.remove(output);
                d
            })
            .collect();
        ctx.problem
            .train
            .iter()
            .filter(|e| {
                let mut v = demo_vars(&brief, e);
                v.remove(output);
                !shown.contains(&v)
            })
            .collect()
    };
    match how {
        "swap" if !demos.is_empty() => {
            let k = ctx.rng.random_range(0..demos.len());
            let label = demos[k].get(output).cloned();
            let pool: Vec<&Example> = unshown
                .into_iter()
                .filter(|e| !classification || output_of(e, output) == label)
                .collect();
            demos[k] = demo_vars(&brief, pool.choose(&mut ctx.rng)?);
            Some(("fewshot-swap", demos))
        }
        "add" => {
            let pick = demo_vars(&brief, unshown.choose(&mut ctx.rng)?);
            let at = ctx.rng.random_range(0..=demos.len());
            demos.insert(at, pick);
            let mut grown = frame.clone();
            grown.demos = demos.clone();
            let prompt = grown.prompt_with(
                &base.name,
                base.instruction.as_deref(),
                &ctx.problem.constraints,
            );
            (demo_budget(ctx)
                >= ctx.prompt_chars(&prompt) / metaprompt_eval::evaluator::BYTES_PER_TOKEN)
                .then_some(("fewshot-add", demos))
        }
        "drop" if demos.len() > brief.labels.len().max(1) => {
            // In a classification, only a demonstration whose label another one also shows.
            let droppable: Vec<usize> = (0..demos.len())
                .filter(|&k| {
                    !classification
                        || demos
                            .iter()
                            .enumerate()
                            .any(|(i, d)| i != k && d.get(output) == demos[k].get(output))
                })
                .collect();
            let k = *droppable.choose(&mut ctx.rng)?;
            demos.remove(k);
            Some(("fewshot-drop", demos))
        }
        "reorder" if demos.len() > 1 => {
            let before = demos.clone();
            demos.shuffle(&mut ctx.rng);
            if demos == before {
                demos.rotate_left(1);
            }
            // Identical demonstrations have no other order.
            (demos != before).then_some(("fewshot-order", demos))
        }
        _ => None,
    }
}

/// Prompt tokens the demonstrations may fill: half the execution model's context, at most
/// [`DEMO_TOKENS`].
fn demo_budget(ctx: &Ctx<'_>) -> usize {
    let context = ctx.layers.execution.info().context_tokens.unwrap_or(4096) as usize;
    (context / 2).min(DEMO_TOKENS)
}

/// The demonstrations with one more, of a label of the classification that none of them shows
/// (and the training set has): added while there are fewer than the labels, else in place of
/// one of the most shown label's. `None` when every label is shown. A label never shown is
/// rarely predicted (TREC, above), and a prompt served to traffic it was not written for (the
/// agent's proposals, whose training set is the failing slice's corrected examples) is
/// typically missing exactly that.
fn cover_label(ctx: &mut Ctx<'_>, demos: &[Demo], output: &str) -> Option<Vec<Demo>> {
    let brief = &ctx.problem.brief;
    let label_of = |v: Option<&serde_json::Value>| -> Option<String> {
        v.map(|v| match v {
            serde_json::Value::String(s) => s.trim().to_lowercase(),
            v => v.to_string(),
        })
    };
    let shown: Vec<Option<String>> = demos.iter().map(|d| label_of(d.get(output))).collect();
    let missing: Vec<&String> = brief
        .labels
        .iter()
        .filter(|l| !shown.contains(&Some(l.trim().to_lowercase())))
        .collect();
    let candidates: Vec<&Example> = ctx
        .problem
        .train
        .iter()
        .filter(|e| {
            let first = e
                .expected
                .as_ref()
                .map(metaprompt_eval::dataset::first_answer);
            let l = label_of(first.as_ref().or(e.vars.get(output)));
            missing
                .iter()
                .any(|m| l.as_deref() == Some(m.trim().to_lowercase().as_str()))
        })
        .collect();
    let pick = (*candidates.choose(&mut ctx.rng)?).clone();
    let mut demos = demos.to_vec();
    let demo = demo_vars(brief, &pick);
    if demos.len() < brief.labels.len().max(ctx.settings.demos) {
        demos.push(demo);
    } else {
        let count = |l: &Option<String>| shown.iter().filter(|s| *s == l).count();
        let k = (0..demos.len()).max_by_key(|&i| count(&shown[i]))?;
        demos[k] = demo;
    }
    Some(demos)
}

/// A demonstration set from training examples the teacher (entry `teacher`) gets right.
async fn bootstrap(
    ctx: &mut Ctx<'_>,
    teacher: usize,
    frame: &Frame,
) -> Result<Option<usize>, Halt> {
    let brief = ctx.problem.brief.clone();
    let k = ctx.settings.demos.max(brief.labels.len());
    let mut sample = ctx.problem.train.clone();
    sample.shuffle(&mut ctx.rng);
    sample.truncate(3 * k);
    let prompt = ctx.pool[teacher].prompt.clone();
    let results = ctx.evaluate_extra(&prompt, &sample).await?;
    let passed: Vec<Example> = sample
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.passed == Some(true))
        .map(|(e, r)| {
            // The demonstration shows what the teacher answered.
            let mut e = e.clone();
            e.expected = Some(serde_json::Value::String(r.output.trim().to_string()));
            e
        })
        .collect();
    if passed.len() < k.min(2) {
        return Ok(None);
    }
    let seed = ctx.rng.random();
    let mut frame = frame.clone();
    frame.demos = pick_demos(&brief, &passed, k, seed)
        .iter()
        .map(|e| demo_vars(&brief, e))
        .collect();
    let p = frame.prompt_with(
        &prompt.name,
        prompt.instruction.as_deref(),
        &ctx.problem.constraints,
    );
    Ok(ctx
        .propose(
            p,
            vec![ctx.pool[teacher].id.clone()],
            "fewshot-bootstrap",
            "",
        )
        .await)
}

pub(crate) fn demo_vars(brief: &crate::Brief, e: &metaprompt_eval::Example) -> Demo {
    Frame::fresh(brief)
        .with_demos(brief, std::slice::from_ref(e))
        .demos
        .remove(0)
}
