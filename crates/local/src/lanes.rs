//! Generation batched across an evaluation's requests (`[local] lanes = N`, off by default):
//! up to N requests generate at once, one token each per decode call, on a context of their
//! own with one KV stream per lane.
//!
//! One request at a time leaves most of the machine idle while it generates (a decode of one
//! token reads every weight for one row); decoding a token for each of several requests in one
//! call reads the weights once for all of them.
//!
//! - **Prompts** are decoded as the canonical procedure in `batch` decodes them: one request
//!   per decode call, in sorted order, reusing KV cells only up to a common prefix rounded down
//!   to [`ROW_GROUP`], so a reused cell holds what decoding the prompt alone would have put
//!   there. The first generated token comes from the prompt's own decode. A lane keeps its
//!   last prompt's aligned prefix for the next request; a prefix another lane holds is copied
//!   (a whole-stream copy) only when it saves [`COPY_WORTH`] tokens more.
//! - **Generated tokens** of all lanes are decoded together. Each lane is a KV stream of its
//!   own (`kv_unified = false`), so a request's attention sees only its own cells, laid out as
//!   when it is alone.
//!
//! **What it costs in reproducibility, measured** (the `lanes` bench, BENCHMARKS.md):
//! llama.cpp's repacked weight kernels compute activation rows in groups of four, and a row
//! left over on a path of its own, with different rounding; within a group a row's result also
//! depends on its place. So a generated token's logits depend, in the last bits, on how many
//! requests shared its decode call and in which lane it sat: greedy texts that reach a near tie
//! go different ways. With at most three lanes every row takes the lone path and texts are
//! bit-for-bit those of one request at a time, but no faster (0.96× on Gemma 3 270M); with
//! four lanes padded to four rows per call they still depended on the lane, and a lone request
//! paid 2.4× for its padding. What holds is a **fixed layout per batch**: requests are sorted
//! by their tokens (then sample and seed), lanes are filled in that order, and nothing else
//! decides who shares a call, so the same requests give the same texts in any order and on
//! every run; a lone request is exactly the one-at-a-time text. What does not hold is the same
//! text for a request batched with different neighbours, which is why lanes are off unless
//! configured.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use metaprompt_llm::{FinishReason, Request, Response, Usage};

use crate::batch::{Canonical, FLASH_ATTENTION_DISABLED, N_BATCH, Prepared, ROW_GROUP, sort_key};
use crate::error::LocalError;
use crate::generation::{Output, Sampler};
use crate::worker::{WorkerOptions, backend};

/// What the lanes have done since the model was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanesStats {
    /// Completion batches generated in lanes.
    pub batches: u64,
    /// Decode calls that carried generated tokens.
    pub steps: u64,
    /// The most requests one of those calls carried.
    pub max_lanes: usize,
    /// Prompt prefixes copied from another lane's stream.
    pub copies: u64,
    /// Prompt tokens whose KV a lane already held (or was copied).
    pub reused_tokens: u64,
}

/// A request generating in a lane.
struct Lane {
    /// The request's index in the caller's batch.
    index: usize,
    tokens: Vec<LlamaToken>,
    reused: usize,
    sampler: Sampler,
    /// The token picked last, decoded in the next step.
    next: LlamaToken,
    out: Output,
    /// The logits row of this lane's next token in the last decode.
    row: i32,
    generated: usize,
    started: Instant,
}

/// The lanes' context: `width` KV streams of `per_lane` tokens each.
pub(crate) struct Lanes<'m> {
    model: &'m LlamaModel,
    threads: i32,
    per_lane: usize,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    width: usize,
    /// Per lane, the prompt prefix whose KV cells it holds and may give to the next prompt.
    held: Vec<Vec<LlamaToken>>,
    stats: LanesStats,
    turn: crate::cores::Turn,
}

/// Lane sizes grow in steps of this many tokens (a multiple of llama.cpp's KV padding, 256, so
/// the cells attention reads are those of a request alone).
const LANE_STEP: usize = 512;

/// A context of `width` KV streams of `per_lane` tokens each (at least one step).
fn context(
    model: &LlamaModel,
    threads: i32,
    width: usize,
    per_lane: usize,
) -> Result<LlamaContext<'_>, LocalError> {
    let per_lane = per_lane.max(LANE_STEP);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new((per_lane * width) as u32))
        .with_n_batch(N_BATCH as u32)
        .with_n_ubatch(N_BATCH as u32)
        .with_n_seq_max(width as u32)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(FLASH_ATTENTION_DISABLED);
    model
        .new_context(backend()?, params)
        .map_err(|e| LocalError::LanesContext {
            width,
            per_lane,
            detail: e.to_string(),
        })
}

/// A prefix is copied from another lane's stream (a copy of the whole stream) only when it
/// saves this many more tokens than the lane's own.
const COPY_WORTH: usize = 64;

impl<'m> Lanes<'m> {
    pub(crate) fn new(
        model: &'m LlamaModel,
        options: &WorkerOptions,
        width: usize,
    ) -> Result<Self, LocalError> {
        let threads = options.threads.max(1) as i32;
        let width = width.max(1);
        Ok(Self {
            model,
            threads,
            per_lane: 0,
            ctx: context(model, threads, width, 0)?,
            batch: LlamaBatch::new(N_BATCH.max(width), 1),
            width,
            held: vec![Vec::new(); width],
            stats: LanesStats::default(),
            turn: crate::cores::Turn::open(&options.models_dir, options.share_cores),
        })
    }

    /// Make every lane hold at least `tokens` (streams are sized to the batches seen, in steps
    /// of [`LANE_STEP`], not to the whole context: a stream copy copies all of it).
    fn fit(&mut self, tokens: usize) -> Result<(), LocalError> {
        if tokens <= self.per_lane {
            return Ok(());
        }
        let per_lane = tokens.div_ceil(LANE_STEP) * LANE_STEP;
        self.ctx = context(self.model, self.threads, self.width, per_lane)?;
        self.per_lane = per_lane;
        self.held.iter_mut().for_each(Vec::clear);
        Ok(())
    }

    /// Keep only the lane's held prefix (drop a finished request's prompt tail and text).
    fn release(&mut self, lane: usize) -> Result<(), LocalError> {
        self.ctx
            .kv_cache_seq_rm(lane as i32, Some(self.held[lane].len() as u32), None)
            .map(|_| ())
            .map_err(|e| LocalError::Trim(e.to_string()))
    }

    pub(crate) fn stats(&self) -> LanesStats {
        self.stats.clone()
    }

    fn decode(&mut self) -> Result<(), LocalError> {
        let (ctx, batch) = (&mut self.ctx, &mut self.batch);
        self.turn
            .hold(|| ctx.decode(batch))
            .map_err(|e| LocalError::Decode(e.to_string()))
    }

    /// Decode `tokens` into `lane` as the canonical procedure would, reusing the longest
    /// aligned prefix some lane holds (its own unless another holds [`COPY_WORTH`] more).
    /// Returns the reused count; the last token's logits are the last row of the last decode.
    fn prefill(&mut self, lane: usize, tokens: &[LlamaToken]) -> Result<usize, LocalError> {
        let n = tokens.len();
        let reusable = |held: &[LlamaToken]| {
            let common = held.iter().zip(tokens).take_while(|(a, b)| a == b).count();
            common.min(n - 1) / ROW_GROUP * ROW_GROUP
        };
        let own = reusable(&self.held[lane]);
        let (best, from) = (0..self.width)
            .map(|l| (reusable(&self.held[l]), l))
            .max_by_key(|&(keep, l)| (keep, l == lane))
            .unwrap_or((0, lane));
        let keep = if from != lane && best >= own + COPY_WORTH {
            // A whole-stream copy, applied at the next decode; the cells past the prefix are
            // dropped from it right away.
            self.ctx
                .kv_cache_seq_cp(from as i32, lane as i32, None, None)
                .map_err(|e| LocalError::CopyStream(e.to_string()))?;
            self.stats.copies += 1;
            best
        } else {
            own
        };
        self.ctx
            .kv_cache_seq_rm(lane as i32, Some(keep as u32), None)
            .map_err(|e| LocalError::Trim(e.to_string()))?;
        let mut start = keep;
        while start < n {
            let end = (start + N_BATCH).min(n);
            self.batch.clear();
            for (i, &token) in tokens.iter().enumerate().take(end).skip(start) {
                self.batch
                    .add(token, i as i32, &[lane as i32], i == n - 1)
                    .map_err(|e| LocalError::BatchAdd(e.to_string()))?;
            }
            self.decode()?;
            start = end;
        }
        // Only rows computed in full groups from an aligned start are safe to reuse.
        self.held[lane] = tokens[..n / ROW_GROUP * ROW_GROUP].to_vec();
        self.stats.reused_tokens += keep as u64;
        Ok(keep)
    }

    /// Complete a batch; answers come back in the caller's order.
    pub(crate) fn complete(
        &mut self,
        canonical: &Canonical<'_>,
        requests: &[Request],
    ) -> Vec<Result<Response, LocalError>> {
        let mut results: Vec<Option<Result<Response, LocalError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut queue: Vec<(usize, Prepared)> = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            let fits = |p: Prepared| {
                canonical.check_fits(p.tokens.len() + request.max_tokens as usize)?;
                Ok(p)
            };
            match canonical.prepare(&request.prompt).and_then(fits) {
                Ok(p) => queue.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Requests that share a prefix become neighbours; equal prompts are ordered by their
        // sample and seed, never by the caller's order.
        queue.sort_by_cached_key(|(i, p)| {
            let r = &requests[*i];
            (sort_key(&p.tokens), r.sample, r.seed)
        });
        let longest = queue
            .iter()
            .map(|(i, p)| p.tokens.len() + requests[*i].max_tokens as usize)
            .max()
            .unwrap_or(0);
        queue.reverse(); // popped from the end, in sorted order
        self.stats.batches += 1;
        let failed = self
            .fit(longest)
            .and_then(|()| self.run(canonical, requests, queue, &mut results))
            .err();
        if let Some(e) = &failed {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Err(e.clone()));
            }
            // What the lanes hold is unknown after a failed decode: start afresh.
            self.ctx.clear_kv_cache();
            self.held.iter_mut().for_each(Vec::clear);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(LocalError::Internal("request skipped"))))
            .collect()
    }

    fn run(
        &mut self,
        canonical: &Canonical<'_>,
        requests: &[Request],
        mut queue: Vec<(usize, Prepared)>,
        results: &mut [Option<Result<Response, LocalError>>],
    ) -> Result<(), LocalError> {
        let vocab = canonical.model().vocab();
        let mut lanes: Vec<Option<Lane>> = (0..self.width).map(|_| None).collect();
        loop {
            // Fill free lanes, in lane order, with the next requests in sorted order; each
            // prompt is decoded alone and yields its first token's logits.
            for (slot, entry) in lanes.iter_mut().enumerate() {
                if entry.is_some() {
                    continue;
                }
                let Some((index, prepared)) = queue.pop() else {
                    break;
                };
                let started = Instant::now();
                let tokens = prepared.tokens;
                let reused = self.prefill(slot, &tokens)?;
                let row = self.batch.n_tokens() - 1;
                let mut lane = Lane {
                    index,
                    tokens,
                    reused,
                    sampler: Sampler::new(&requests[index]),
                    next: LlamaToken(0),
                    out: Output::default(),
                    row,
                    generated: 0,
                    started,
                };
                // The first token comes from this prompt's own decode.
                let logits = self.ctx.get_logits_ith(row).to_vec();
                match step(&mut lane, &requests[index], &logits, &vocab) {
                    Some(finish) => {
                        results[index] = Some(Ok(respond(lane, finish)));
                        self.release(slot)?;
                    }
                    None => *entry = Some(lane),
                }
            }
            if lanes.iter().all(Option::is_none) {
                return Ok(());
            }
            // The next token of every generating lane, in lane order (llama.cpp takes
            // consecutive streams into one call; an idle lane between two splits it).
            self.batch.clear();
            let mut active = 0;
            for (slot, lane) in lanes.iter_mut().enumerate() {
                let (token, pos) = match lane {
                    Some(lane) => {
                        active += 1;
                        lane.row = self.batch.n_tokens();
                        (lane.next, lane.tokens.len() + lane.generated - 1)
                    }
                    None => continue,
                };
                self.batch
                    .add(token, pos as i32, &[slot as i32], true)
                    .map_err(|e| LocalError::BatchAdd(e.to_string()))?;
            }
            self.decode()?;
            self.stats.steps += 1;
            self.stats.max_lanes = self.stats.max_lanes.max(active);
            for (slot, entry) in lanes.iter_mut().enumerate() {
                let Some(lane) = entry.as_mut() else {
                    continue;
                };
                let logits = self.ctx.get_logits_ith(lane.row).to_vec();
                if let Some(finish) = step(lane, &requests[lane.index], &logits, &vocab) {
                    if let Some(lane) = entry.take() {
                        let index = lane.index;
                        results[index] = Some(Ok(respond(lane, finish)));
                    }
                    self.release(slot)?;
                }
            }
        }
    }
}

/// Pick the lane's next token from `logits`; `Some` when the request is finished.
fn step(
    lane: &mut Lane,
    request: &Request,
    logits: &[f32],
    vocab: &LlamaVocab<'_>,
) -> Option<FinishReason> {
    let max_tokens = request.max_tokens as usize;
    if lane.generated >= max_tokens {
        return Some(FinishReason::Length);
    }
    let token = lane.sampler.pick(logits);
    lane.next = token;
    if vocab.is_eog(token) {
        return Some(FinishReason::Stop);
    }
    lane.generated += 1;
    if lane
        .out
        .push(&vocab.token_to_piece(token, false, None), &request.stop)
    {
        return Some(FinishReason::Stop);
    }
    (lane.generated == max_tokens).then_some(FinishReason::Length)
}

fn respond(lane: Lane, finish: FinishReason) -> Response {
    Response {
        text: lane.out.into_text(),
        finish_reason: finish,
        usage: Usage {
            input_tokens: lane.tokens.len() as u64,
            output_tokens: lane.generated as u64,
            cached_input_tokens: Some(lane.reused as u64),
        },
        model: String::new(),
        latency: lane.started.elapsed(),
        cost_usd: Some(0.0),
        cached: false,
    }
}
