//! Continuous batching of live requests: what the prompt service sends through
//! [`Provider::complete_live`](metaprompt_llm::Provider::complete_live).
//!
//! Live requests get a context of their own, made on the first one, with `parallel` sequences
//! (slots) of `context_size` tokens each. Every step decodes, in one call, the next token of
//! every slot that is generating and as much of newly admitted prompts as the batch holds
//! (chunked prefill), then samples each slot's token and sends its text to the caller. A
//! request that arrives while others generate joins at the next step; more requests than slots
//! wait in a queue. A slot keeps its last prompt's KV, and a new request goes to the free slot
//! sharing the longest prefix with it, so a served prompt's instruction and demonstrations are
//! decoded once per slot, not once per request.
//!
//! This is the opposite trade from the canonical procedure in `batch`: a token's logits
//! depend (in the last bits) on the rows batched with it and on flash attention (on here, as in
//! `llama-server`, for speed), so live answers are not promised bit for bit; prefix reuse is
//! aligned as in the canonical procedure, and a request alone answered the same twice in the
//! tests. Evaluations and scores never come here; they stay on the
//! canonical context, which live traffic does not touch. The worker thread alternates: a
//! canonical job runs whole between two live steps.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use metaprompt_llm::{FinishReason, Request, Response, TextSink, Usage};
use tokio::sync::oneshot;

use crate::batch::{Canonical, N_BATCH, ROW_GROUP};
use crate::error::LocalError;
use crate::generation::{Output, Sampler};
use crate::worker::{WorkerOptions, backend};

/// `LLAMA_FLASH_ATTN_TYPE_AUTO`: llama.cpp's default, on for the CPU, as in `llama-server`.
/// Measured in `benches/chat_tokens.rs` (8 clients × 64 tokens): 0.89× llama-server's tokens/s
/// with flash attention off, 1.00× with it on. The canonical context keeps it off.
const FLASH_ATTENTION_AUTO: i32 = -1;

/// A live request and where its text and answer go.
pub(crate) struct Live {
    pub request: Request,
    pub text: TextSink,
    pub reply: oneshot::Sender<Result<Response, LocalError>>,
}

/// What the live path has done since the model was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Live requests answered (finished, failed or abandoned by their caller).
    pub requests: u64,
    /// Decode calls.
    pub steps: u64,
    /// Tokens decoded (prompt and generated).
    pub tokens: u64,
    /// The most sequences one decode call carried.
    pub max_sequences: usize,
    /// Prompt tokens whose KV a slot already held.
    pub reused_tokens: u64,
}

/// A request being answered in a slot.
struct Active {
    live: Live,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV is in place.
    fed: usize,
    reused: usize,
    /// The token sampled last step, to be decoded in the next.
    next: Option<LlamaToken>,
    generated: usize,
    /// This step's row of logits in the batch.
    row: Option<i32>,
    sampler: Sampler,
    out: Output,
    started: Instant,
}

#[derive(Default)]
struct Slot {
    /// Tokens whose KV this slot's sequence holds while it is free (its last prompt).
    cached: Vec<LlamaToken>,
    active: Option<Active>,
}

pub(crate) struct LiveBatch<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    queue: VecDeque<Live>,
    stats: LiveStats,
    turn: crate::cores::Turn,
}

impl<'m> LiveBatch<'m> {
    pub(crate) fn new(model: &'m LlamaModel, options: &WorkerOptions) -> Result<Self, LocalError> {
        let slots = options.parallel.clamp(1, 64);
        let threads = options.threads.max(1) as i32;
        // Not unified: each sequence has its own `context_size` cells and attends over them only.
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(options.context_size * slots))
            .with_n_batch(N_BATCH as u32)
            .with_n_ubatch(N_BATCH as u32)
            .with_n_seq_max(slots)
            .with_kv_unified(false)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(FLASH_ATTENTION_AUTO);
        let ctx = model
            .new_context(backend()?, params)
            .map_err(|e| LocalError::LiveContext {
                slots,
                tokens: options.context_size,
                detail: e.to_string(),
            })?;
        Ok(Self {
            model,
            ctx,
            batch: LlamaBatch::new(N_BATCH, 1),
            slots: (0..slots).map(|_| Slot::default()).collect(),
            queue: VecDeque::new(),
            stats: LiveStats::default(),
            turn: crate::cores::Turn::open(&options.models_dir, options.share_cores),
        })
    }

    pub(crate) fn push(&mut self, live: Live) {
        self.queue.push_back(live);
    }

    pub(crate) fn busy(&self) -> bool {
        !self.queue.is_empty() || self.slots.iter().any(|s| s.active.is_some())
    }

    pub(crate) fn stats(&self) -> LiveStats {
        self.stats.clone()
    }

    /// Admit what waits, decode one step for every active slot, sample, send text.
    pub(crate) fn step(&mut self, canonical: &Canonical<'_>) {
        self.drop_abandoned();
        self.admit(canonical);
        self.batch.clear();
        let mut budget = N_BATCH;
        let mut sequences = 0;
        let mut failed = None;
        // Generating slots first, a token each; then prompts, in chunks, in what is left.
        for pass in [true, false] {
            for (seq, slot) in self.slots.iter_mut().enumerate() {
                let Some(a) = slot.active.as_mut() else {
                    continue;
                };
                if pass {
                    a.row = None;
                }
                let added = if pass {
                    a.next.take().map(|t| {
                        let pos = a.prompt.len() + a.generated - 1;
                        self.batch.add(t, pos as i32, &[seq as i32], true)
                    })
                } else if a.fed < a.prompt.len() && budget > 0 {
                    let end = (a.fed + budget).min(a.prompt.len());
                    let mut r = Ok(());
                    for (i, &t) in a.prompt.iter().enumerate().take(end).skip(a.fed) {
                        let last = i + 1 == a.prompt.len();
                        r = r.and(self.batch.add(t, i as i32, &[seq as i32], last));
                    }
                    budget -= end - a.fed;
                    a.fed = end;
                    Some(r)
                } else {
                    None
                };
                match added {
                    Some(Ok(())) => {
                        if pass {
                            budget -= 1;
                        }
                        if pass || a.fed == a.prompt.len() {
                            a.row = Some(self.batch.n_tokens() - 1);
                        }
                        sequences += 1;
                    }
                    Some(Err(e)) => failed = Some(LocalError::BatchAdd(e.to_string())),
                    None => {}
                }
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        let decoded = match failed {
            Some(e) => Err(e),
            None => {
                let (ctx, batch) = (&mut self.ctx, &mut self.batch);
                self.turn
                    .hold(|| ctx.decode(batch))
                    .map_err(|e| LocalError::Decode(e.to_string()))
            }
        };
        if let Err(e) = decoded {
            // The batch's KV is in an unknown state: every request in it fails, cleanly.
            for seq in 0..self.slots.len() {
                if self.slots[seq].active.is_some() {
                    self.fail(seq, &e);
                }
            }
            return;
        }
        self.stats.steps += 1;
        self.stats.tokens += self.batch.n_tokens() as u64;
        self.stats.max_sequences = self.stats.max_sequences.max(sequences);
        for seq in 0..self.slots.len() {
            self.sample(seq);
        }
    }

    /// Sample the slot's next token from this step's logits, if the step gave it some.
    fn sample(&mut self, seq: usize) {
        let model = self.model;
        let vocab = model.vocab();
        let Some(a) = self.slots[seq].active.as_mut() else {
            return;
        };
        let Some(row) = a.row.take() else {
            return;
        };
        let max_tokens = a.live.request.max_tokens as usize;
        if max_tokens == 0 {
            return self.finish(seq, FinishReason::Length);
        }
        let token = a.sampler.pick(self.ctx.get_logits_ith(row));
        if vocab.is_eog(token) {
            return self.finish(seq, FinishReason::Stop);
        }
        a.generated += 1;
        let stop = &a.live.request.stop;
        if a.out.push(&vocab.token_to_piece(token, false, None), stop) {
            return self.finish(seq, FinishReason::Stop);
        }
        if a.generated == max_tokens {
            return self.finish(seq, FinishReason::Length);
        }
        if let Some(piece) = a.out.ready(stop) {
            let _ = a.live.text.send(piece);
        }
        a.next = Some(token);
    }

    /// Free the slots of callers who went away (the answer's receiver or the text's receiver
    /// dropped: a client that disconnected mid-stream stops costing decode steps).
    fn drop_abandoned(&mut self) {
        for seq in 0..self.slots.len() {
            if let Some(a) = &self.slots[seq].active
                && (a.live.reply.is_closed() || a.live.text.is_closed())
            {
                self.fail(seq, &LocalError::CallerGone);
            }
        }
        let before = self.queue.len();
        self.queue
            .retain(|l| !l.reply.is_closed() && !l.text.is_closed());
        self.stats.requests += (before - self.queue.len()) as u64;
    }

    /// Put waiting requests into free slots, each where its prompt's longest prefix is cached.
    fn admit(&mut self, canonical: &Canonical<'_>) {
        while !self.queue.is_empty() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none())
                .collect();
            if free.is_empty() {
                return;
            }
            let Some(live) = self.queue.pop_front() else {
                return;
            };
            let prepared = canonical.prepare(&live.request.prompt).and_then(|p| {
                canonical.check_fits(p.tokens.len() + live.request.max_tokens as usize)?;
                Ok(p)
            });
            let tokens = match prepared {
                Ok(p) => p.tokens,
                Err(e) => {
                    self.stats.requests += 1;
                    let _ = live.reply.send(Err(e));
                    continue;
                }
            };
            let common = |seq: usize| {
                self.slots[seq]
                    .cached
                    .iter()
                    .zip(&tokens)
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            let Some(&seq) = free.iter().max_by_key(|&&s| common(s)) else {
                return;
            };
            // At least the last prompt token is decoded, for its logits. The reused part ends on
            // a row group, as in the canonical procedure, so a request alone gets the same
            // answer whatever its slot held before.
            let mut keep = common(seq).min(tokens.len() - 1) / ROW_GROUP * ROW_GROUP;
            if self
                .ctx
                .kv_cache_seq_rm(seq as i32, Some(keep as u32), None)
                .is_err()
            {
                let _ = self.ctx.kv_cache_seq_rm(seq as i32, None, None);
                keep = 0;
            }
            self.stats.reused_tokens += keep as u64;
            let slot = &mut self.slots[seq];
            slot.cached.clear();
            slot.active = Some(Active {
                sampler: Sampler::new(&live.request),
                live,
                prompt: tokens,
                fed: keep,
                reused: keep,
                next: None,
                generated: 0,
                row: None,
                out: Output::default(),
                started: Instant::now(),
            });
        }
    }

    /// Answer the slot's request; keep its prompt's KV for the next request.
    fn finish(&mut self, seq: usize, finish: FinishReason) {
        let Some(mut a) = self.slots[seq].active.take() else {
            return;
        };
        self.stats.requests += 1;
        let n = a.prompt.len();
        self.slots[seq].cached = match self.ctx.kv_cache_seq_rm(seq as i32, Some(n as u32), None) {
            Ok(_) => a.prompt,
            Err(_) => {
                let _ = self.ctx.kv_cache_seq_rm(seq as i32, None, None);
                Vec::new()
            }
        };
        if let Some(piece) = a.out.rest() {
            let _ = a.live.text.send(piece);
        }
        let response = Response {
            text: a.out.into_text(),
            finish_reason: finish,
            usage: Usage {
                input_tokens: n as u64,
                output_tokens: a.generated as u64,
                cached_input_tokens: Some(a.reused as u64),
            },
            model: String::new(),
            latency: a.started.elapsed(),
            cost_usd: Some(0.0),
            cached: false,
        };
        let _ = a.live.reply.send(Ok(response));
    }

    /// Answer the slot's request with an error and empty its sequence.
    fn fail(&mut self, seq: usize, error: &LocalError) {
        let Some(a) = self.slots[seq].active.take() else {
            return;
        };
        self.stats.requests += 1;
        let _ = self.ctx.kv_cache_seq_rm(seq as i32, None, None);
        self.slots[seq].cached.clear();
        let _ = a.live.reply.send(Err(error.clone()));
    }
}
