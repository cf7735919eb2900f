//! The llama.cpp worker: one thread per model file owns the model and its context and serves
//! jobs from a channel, so the async side never blocks and the model is loaded once.
//!
//! # Reproducibility by construction
//!
//! llama.cpp's CPU kernels compute token rows in groups (of four on Gemma; wider on Qwen's
//! shapes); a row's result depends on where it falls in its group, so the same prompt decoded in a different batch layout gives
//! slightly different logits (measured: log-probabilities moving by up to 0.2, enough to flip
//! borderline labels). Every request is therefore evaluated by one canonical procedure that does
//! not depend on its neighbours:
//!
//! - one sequence, one request at a time, one request per decode call;
//! - the prompt's KV cache is reused from the previous request only up to their common token
//!   prefix **rounded down to a multiple of [`ROW_GROUP`] (8)**, so each reused row was
//!   computed in the same group, at the same position, as it would have been alone;
//! - decode calls are at most `n_batch` tokens (a multiple of 8) from an aligned start;
//! - generated tokens and label continuations are never reused.
//!
//! The one exception is opt-in: `[local] lanes` above 1 generates a batch's completions several
//! at once on a context of their own (`lanes`), a fixed layout per batch instead of per request.
//!
//! Sorting a batch by tokens puts requests that share a prefix (the instruction and the demos of
//! one prompt template) next to each other, so the shared part is decoded once. The test suite
//! checks that a request scores bit-for-bit the same alone, in a batch, and in any order.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use metaprompt_llm::{
    FinishReason, LabelScores, Prompt, Request, Response, Role, ScoreRequest, Usage,
};
use rand::SeedableRng;
use rand::distr::{Distribution, weighted::WeightedIndex};
use tokio::sync::oneshot;

use crate::chat::ChatTemplate;
use crate::embed::Embedder;
use crate::fetch::{self, ModelRef};
use crate::lanes::{Lanes, LanesStats};
use crate::live::{Live, LiveBatch, LiveStats};

/// Rows are computed in groups; reuse boundaries are multiples of this many, so that a token
/// sits at the same place within its group whether its prompt was decoded from the start or
/// after a reused prefix. Four was enough on Gemma 3 270M; on Qwen2.5-Coder 0.5B and 1.5B a
/// reused prefix of a multiple of four changed some of 100 SST-2 examples' label
/// log-probabilities, of eight none (the `shared_prefix` bench, `-- 100 --model …`). Eight
/// cost Gemma nothing measurable and Qwen 1.5B 11% of its batched rate; sixteen cost Gemma 25%.
pub(crate) const ROW_GROUP: usize = 8;
/// Tokens per decode call (a multiple of `ROW_GROUP`).
pub(crate) const N_BATCH: usize = 512;
/// `LLAMA_FLASH_ATTN_TYPE_DISABLED`. llama.cpp's default (auto) turns flash attention on for the
/// CPU, and its results were measured to depend on the batch layout; the plain path, with the
/// alignment rules above, gives bit-identical scores.
pub(crate) const FLASH_ATTENTION_DISABLED: i32 = 0;

/// How a batch is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Sort by tokens and reuse the aligned common prefix of consecutive requests.
    SharedPrefix,
    /// Every request decoded from scratch (the baseline benchmarks compare against).
    OneByOne,
    /// Prompts as `SharedPrefix`; completions generate several at once, one token per
    /// request per decode call (see `lanes`): a fixed layout per batch, not per request.
    /// Scores are evaluated as `SharedPrefix`.
    Lanes,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub threads: u32,
    pub context_size: u32,
    /// Live requests decoded together (slots of the live context).
    pub parallel: u32,
    pub models_dir: PathBuf,
    pub python: String,
    /// Take the machine's compute turn for each decode ([`crate::cores`]).
    pub share_cores: bool,
    /// Requests a [`Strategy::Lanes`] batch generates at once (see `lanes`).
    pub lanes: u32,
}

/// Facts about a loaded model.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub path: PathBuf,
    pub description: String,
    pub n_ctx_train: u32,
    pub has_chat_template: bool,
    /// The model's own chat template (GGUF `tokenizer.chat_template`), when it has one.
    pub chat_template: Option<String>,
    pub load_time: Duration,
}

pub(crate) enum Job {
    Complete {
        requests: Vec<Request>,
        strategy: Strategy,
        reply: oneshot::Sender<Vec<Result<Response, String>>>,
    },
    Score {
        requests: Vec<ScoreRequest>,
        strategy: Strategy,
        reply: oneshot::Sender<Vec<Result<LabelScores, String>>>,
    },
    Facts {
        reply: oneshot::Sender<Result<ModelFacts, String>>,
    },
    /// Decode one prompt of `tokens` tokens from scratch; reply with tokens per second.
    PrefillRate {
        tokens: usize,
        reply: oneshot::Sender<Result<f64, String>>,
    },
    /// A live request: decoded with the other live requests in flight (see [`crate::live`]).
    Live(Live),
    LiveStats {
        reply: oneshot::Sender<LiveStats>,
    },
    LanesStats {
        reply: oneshot::Sender<LanesStats>,
    },
    /// The text a prompt is decoded as (a chat prompt through the model's template).
    Render {
        prompt: Prompt,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Mean-pooled embeddings of texts (see [`crate::embed`]).
    Embed {
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
    },
}

impl Job {
    fn fail(self, error: &str) {
        // A caller that stopped waiting is no error of ours.
        match self {
            Job::Complete {
                requests, reply, ..
            } => {
                let _ = reply.send(requests.iter().map(|_| Err(error.to_string())).collect());
            }
            Job::Score {
                requests, reply, ..
            } => {
                let _ = reply.send(requests.iter().map(|_| Err(error.to_string())).collect());
            }
            Job::Facts { reply } => {
                let _ = reply.send(Err(error.to_string()));
            }
            Job::PrefillRate { reply, .. } => {
                let _ = reply.send(Err(error.to_string()));
            }
            Job::Live(live) => {
                let _ = live.reply.send(Err(error.to_string()));
            }
            Job::LiveStats { reply } => {
                let _ = reply.send(LiveStats::default());
            }
            Job::LanesStats { reply } => {
                let _ = reply.send(LanesStats::default());
            }
            Job::Render { reply, .. } => {
                let _ = reply.send(Err(error.to_string()));
            }
            Job::Embed { reply, .. } => {
                let _ = reply.send(Err(error.to_string()));
            }
        }
    }
}

/// llama.cpp's backend is process-wide state: initialised once, logs silenced.
pub(crate) fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b =
                LlamaBackend::init().map_err(|e| format!("cannot initialise llama.cpp: {e}"))?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Start the worker thread of one model. It fetches (if needed) and loads the model, then serves
/// jobs until every sender is dropped.
pub(crate) fn spawn(model: ModelRef, options: EngineOptions) -> Result<Sender<Job>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("metaprompt-llama".into())
        .spawn(move || worker(model, options, rx))
        .map_err(|e| format!("cannot start the model thread: {e}"))?;
    Ok(tx)
}

fn worker(model_ref: ModelRef, options: EngineOptions, rx: Receiver<Job>) {
    let started = Instant::now();
    let loaded = (|| {
        if let Some(p) = crate::cpu::problem() {
            return Err(p);
        }
        let path = fetch::ensure(
            &model_ref,
            &options.models_dir,
            &options.python,
            &fetch::Log,
        )
        .map_err(|e| e.to_string())?;
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
            .map_err(|e| format!("cannot load {} as a GGUF model: {e}", path.display()))?;
        Ok::<_, String>((path, model))
    })();
    let (path, model) = match loaded {
        Ok(m) => m,
        Err(e) => {
            for job in rx {
                job.fail(&e);
            }
            return;
        }
    };
    let mut engine = match Engine::new(&model, &options) {
        Ok(e) => e,
        Err(e) => {
            for job in rx {
                job.fail(&e);
            }
            return;
        }
    };
    let facts = ModelFacts {
        description: model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "unnamed model".into()),
        n_ctx_train: model.n_ctx_train(),
        has_chat_template: engine.template.is_some() || engine.own.is_some(),
        chat_template: model.meta_val_str("tokenizer.chat_template").ok(),
        load_time: started.elapsed(),
        path,
    };
    // The live context is made on the first live request: evaluations never pay for it.
    let mut live: Option<LiveBatch<'_>> = None;
    // So is the embedding context, on the first embedding request.
    let mut embedder: Option<Embedder<'_>> = None;
    // And the generation lanes, on the first completion batch that uses them.
    let mut lanes: Option<Lanes<'_>> = None;
    loop {
        let busy = live.as_ref().is_some_and(LiveBatch::busy);
        // While live requests are in flight, take what has arrived and then decode a step;
        // otherwise wait for work.
        let job = if busy {
            rx.try_recv().ok()
        } else {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        };
        let Some(job) = job else {
            if let Some(batch) = live.as_mut() {
                batch.step(&engine);
            }
            continue;
        };
        match job {
            Job::Complete {
                requests,
                strategy: Strategy::Lanes,
                reply,
            } => {
                if lanes.is_none() {
                    match Lanes::new(&model, &options, options.lanes as usize) {
                        Ok(l) => lanes = Some(l),
                        Err(e) => {
                            let _ = reply.send(requests.iter().map(|_| Err(e.clone())).collect());
                            continue;
                        }
                    }
                }
                if let Some(l) = lanes.as_mut() {
                    let _ = reply.send(l.complete(&engine, &requests));
                }
            }
            Job::Complete {
                requests,
                strategy,
                reply,
            } => {
                let _ = reply.send(engine.run_batch(&requests, strategy, Engine::complete_one));
            }
            Job::Score {
                requests,
                strategy,
                reply,
            } => {
                let _ = reply.send(engine.run_batch(&requests, strategy, Engine::score_one));
            }
            Job::Facts { reply } => {
                let _ = reply.send(Ok(facts.clone()));
            }
            Job::PrefillRate { tokens, reply } => {
                let _ = reply.send(engine.prefill_rate(tokens));
            }
            Job::Live(request) => {
                if live.is_none() {
                    match LiveBatch::new(&model, &options) {
                        Ok(batch) => live = Some(batch),
                        Err(e) => {
                            let _ = request.reply.send(Err(e));
                            continue;
                        }
                    }
                }
                if let Some(batch) = live.as_mut() {
                    batch.push(request);
                }
            }
            Job::LiveStats { reply } => {
                let _ = reply.send(live.as_ref().map(LiveBatch::stats).unwrap_or_default());
            }
            Job::LanesStats { reply } => {
                let _ = reply.send(lanes.as_ref().map(Lanes::stats).unwrap_or_default());
            }
            Job::Render { prompt, reply } => {
                let _ = reply.send(match &prompt {
                    Prompt::Text(t) => Ok(t.clone()),
                    Prompt::Chat(m) => engine.render_chat(m),
                });
            }
            Job::Embed { texts, reply } => {
                if embedder.is_none() {
                    match Embedder::new(&model, &options) {
                        Ok(e) => embedder = Some(e),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    }
                }
                if let Some(e) = embedder.as_mut() {
                    let _ = reply.send(e.embed(&texts));
                }
            }
        }
    }
}

/// Tokens and what the request costs in them.
pub(crate) struct Prepared {
    pub(crate) tokens: Vec<LlamaToken>,
}

pub(crate) struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    template: Option<LlamaChatTemplate>,
    /// The model's own chat template, compiled (`None`: it has none, or minijinja cannot
    /// compile it; llama.cpp's rendering is used then).
    own: Option<ChatTemplate>,
    /// Tokens whose KV cells in sequence 0 may be reused (a `ROW_GROUP`-aligned prompt prefix).
    reusable: Vec<LlamaToken>,
    context_size: usize,
    turn: crate::cores::Turn,
}

/// The model's chat template from its metadata, compiled, with its BOS and EOS tokens as text.
fn own_template(model: &LlamaModel) -> Option<ChatTemplate> {
    let source = model.meta_val_str("tokenizer.chat_template").ok()?;
    let vocab = model.vocab();
    let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    match ChatTemplate::new(&source, piece(vocab.bos()), piece(vocab.eos())) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "the model's chat template is not used");
            None
        }
    }
}

/// Which prompt sorts first: requests sharing a prefix become neighbours.
pub(crate) fn sort_key(tokens: &[LlamaToken]) -> Vec<i32> {
    tokens.iter().map(|t| t.0).collect()
}

/// `log Σ exp(logits)`, once per logits row (the vocabulary is 262k entries wide).
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from((x - max).exp())).sum();
    f64::from(max) + sum.ln()
}

fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    LlamaToken(best as i32)
}

impl<'m> Engine<'m> {
    fn new(model: &'m LlamaModel, options: &EngineOptions) -> Result<Self, String> {
        let threads = options.threads.max(1) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(options.context_size))
            .with_n_batch(N_BATCH as u32)
            .with_n_ubatch(N_BATCH as u32)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(FLASH_ATTENTION_DISABLED);
        let backend = backend()?;
        let ctx = model.new_context(backend, params).map_err(|e| {
            format!(
                "cannot create a context of {} tokens: {e}",
                options.context_size
            )
        })?;
        Ok(Self {
            model,
            ctx,
            batch: LlamaBatch::new(N_BATCH, 1),
            template: model.chat_template(None).ok(),
            own: own_template(model),
            reusable: Vec::new(),
            context_size: options.context_size as usize,
            turn: crate::cores::Turn::open(&options.models_dir, options.share_cores),
        })
    }

    pub(crate) fn model(&self) -> &'m LlamaModel {
        self.model
    }

    /// Evaluate a batch in the strategy's order; answers come back in the caller's order.
    fn run_batch<Q, R>(
        &mut self,
        requests: &[Q],
        strategy: Strategy,
        one: fn(&mut Self, &Q, Prepared, Strategy) -> Result<R, String>,
    ) -> Vec<Result<R, String>>
    where
        Q: HasPrompt,
    {
        let prepared: Vec<Result<Prepared, String>> =
            requests.iter().map(|r| self.prepare(r.prompt())).collect();
        let mut order: Vec<usize> = (0..requests.len()).collect();
        if strategy != Strategy::OneByOne {
            order.sort_by_cached_key(|&i| {
                prepared[i]
                    .as_ref()
                    .map(|p| sort_key(&p.tokens))
                    .unwrap_or_default()
            });
        }
        let mut results: Vec<Option<Result<R, String>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut prepared: Vec<Option<Result<Prepared, String>>> =
            prepared.into_iter().map(Some).collect();
        for i in order {
            let result = match prepared[i].take() {
                Some(Ok(p)) => one(self, &requests[i], p, strategy),
                Some(Err(e)) => Err(e),
                None => Err("internal: request prepared twice".into()),
            };
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("internal: request skipped".into())))
            .collect()
    }

    pub(crate) fn prepare(&self, prompt: &Prompt) -> Result<Prepared, String> {
        let vocab = self.model.vocab();
        let tokens = match prompt {
            Prompt::Text(text) => vocab.tokenize(text.as_bytes(), true, false),
            Prompt::Chat(messages) => {
                let text = self.render_chat(messages)?;
                // Chat templates usually write the BOS marker themselves.
                let bos = vocab.token_to_piece(vocab.bos(), true, None);
                let add_bos = !text.as_bytes().starts_with(&bos);
                vocab.tokenize(text.as_bytes(), add_bos, true)
            }
        };
        if tokens.is_empty() {
            return Err("the prompt is empty".into());
        }
        Ok(Prepared { tokens })
    }

    /// Apply the model's own chat template (see [`crate::chat`]); where minijinja cannot
    /// render it, llama.cpp's rendering of its template family; a model without one gets a
    /// plain transcript.
    pub(crate) fn render_chat(
        &self,
        messages: &[metaprompt_llm::Message],
    ) -> Result<String, String> {
        if let Some(own) = &self.own {
            match own.render(messages) {
                Ok(text) => return Ok(text),
                Err(e) if self.template.is_none() => return Err(e),
                Err(e) => tracing::warn!(error = %e, "falling back to llama.cpp's chat template"),
            }
        }
        if let Some(template) = &self.template {
            let chat = messages
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.as_str().into(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a chat message cannot be passed to llama.cpp: {e}"))?;
            return self
                .model
                .apply_chat_template(template, &chat, true)
                .map_err(|e| format!("chat template failed: {e}"));
        }
        let mut text = String::new();
        for m in messages {
            match m.role {
                Role::System => text.push_str(&format!("{}\n\n", m.content)),
                Role::User => text.push_str(&format!("User: {}\n\n", m.content)),
                Role::Assistant => text.push_str(&format!("Assistant: {}\n\n", m.content)),
            }
        }
        text.push_str("Assistant:");
        Ok(text)
    }

    pub(crate) fn check_fits(&self, needed: usize) -> Result<(), String> {
        if needed > self.context_size {
            return Err(format!(
                "the request needs {needed} tokens of context but the local context holds {} (raise [local] context_size in metaprompt.toml)",
                self.context_size
            ));
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<(), String> {
        let (ctx, batch) = (&mut self.ctx, &mut self.batch);
        self.turn
            .hold(|| ctx.decode(batch))
            .map_err(|e| format!("llama.cpp decode failed: {e}"))
    }

    fn trim_to(&mut self, keep: usize) -> Result<(), String> {
        if keep == 0 {
            self.ctx.clear_kv_cache();
        } else {
            self.ctx
                .kv_cache_seq_rm(0, Some(keep as u32), None)
                .map_err(|e| format!("cannot trim the KV cache: {e}"))?;
        }
        self.reusable.truncate(keep);
        Ok(())
    }

    /// Put the prompt's KV in sequence 0 (reusing what the strategy allows) and return how many
    /// tokens were reused and the batch index of the last token's logits.
    fn prefill(
        &mut self,
        tokens: &[LlamaToken],
        strategy: Strategy,
    ) -> Result<(usize, i32), String> {
        let n = tokens.len();
        let keep = match strategy {
            Strategy::SharedPrefix | Strategy::Lanes => {
                let common = self
                    .reusable
                    .iter()
                    .zip(tokens)
                    .take_while(|(a, b)| a == b)
                    .count();
                // At least the last token must be decoded to get its logits.
                common.min(n - 1) / ROW_GROUP * ROW_GROUP
            }
            Strategy::OneByOne => 0,
        };
        self.trim_to(keep)?;
        let mut start = keep;
        let mut last = 0;
        while start < n {
            let end = (start + N_BATCH).min(n);
            self.batch.clear();
            for (i, &token) in tokens.iter().enumerate().take(end).skip(start) {
                self.batch
                    .add(token, i as i32, &[0], i == n - 1)
                    .map_err(|e| e.to_string())?;
            }
            self.decode()?;
            last = (end - start - 1) as i32;
            start = end;
        }
        // Only rows computed in full groups from an aligned start are safe to reuse.
        self.reusable = tokens[..n / ROW_GROUP * ROW_GROUP].to_vec();
        Ok((keep, last))
    }

    fn score_one(
        &mut self,
        request: &ScoreRequest,
        prepared: Prepared,
        strategy: Strategy,
    ) -> Result<LabelScores, String> {
        let start = Instant::now();
        if request.labels.is_empty() {
            return Err("a score request needs at least one label".into());
        }
        let tokens = prepared.tokens;
        let n = tokens.len();
        let prompt_text = match &request.prompt {
            Prompt::Text(t) => t.clone(),
            Prompt::Chat(m) => self.render_chat(m)?,
        };
        let parse_special = matches!(request.prompt, Prompt::Chat(_));
        let labels: Vec<Vec<LlamaToken>> = request
            .labels
            .iter()
            .map(|label| self.label_tokens(&prompt_text, label, parse_special))
            .collect();
        if let Some(i) = labels.iter().position(Vec::is_empty) {
            return Err(format!("label {:?} has no tokens", request.labels[i]));
        }
        let longest = labels.iter().map(Vec::len).max().unwrap_or(1);
        self.check_fits(n + longest)?;
        let (reused, last) = self.prefill(&tokens, strategy)?;
        let first = self.ctx.get_logits_ith(last);
        let first_lse = log_sum_exp(first);
        let first: Vec<f64> = labels
            .iter()
            .map(|l| f64::from(first[l[0].0 as usize]) - first_lse)
            .collect();
        let mut logprobs = Vec::with_capacity(labels.len());
        let mut decoded_extra = 0;
        for (label, first) in labels.iter().zip(first) {
            let mut lp = first;
            if label.len() > 1 {
                // The label's own tokens, after the prompt, in a decode of their own.
                self.trim_to_prompt(n)?;
                self.batch.clear();
                for (k, &t) in label[..label.len() - 1].iter().enumerate() {
                    self.batch
                        .add(t, (n + k) as i32, &[0], true)
                        .map_err(|e| e.to_string())?;
                }
                self.decode()?;
                decoded_extra += label.len() - 1;
                for (k, &t) in label[1..].iter().enumerate() {
                    let row = self.ctx.get_logits_ith(k as i32);
                    lp += f64::from(row[t.0 as usize]) - log_sum_exp(row);
                }
            }
            logprobs.push(lp);
        }
        self.trim_to_prompt(n)?;
        let usage = Usage {
            input_tokens: (n + decoded_extra) as u64,
            output_tokens: 0,
            cached_input_tokens: Some(reused as u64),
        };
        Ok(LabelScores::from_logprobs(
            logprobs,
            labels.iter().map(|l| l.len() as u32).collect(),
            usage,
            start.elapsed(),
            Some(0.0),
        ))
    }

    /// The tokens a label adds after the prompt. Tokenizers merge across the boundary, so the
    /// label is tokenized together with the prompt's last line and the line's own tokens are
    /// taken off; when that line's tokens change, the label is tokenized on its own.
    fn label_tokens(&self, prompt: &str, label: &str, parse_special: bool) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let line = &prompt[prompt.rfind('\n').map_or(0, |i| i + 1)..];
        let head = vocab.tokenize(line.as_bytes(), false, parse_special);
        let whole = vocab.tokenize(format!("{line}{label}").as_bytes(), false, parse_special);
        if whole.len() > head.len() && whole[..head.len()] == head[..] {
            whole[head.len()..].to_vec()
        } else {
            vocab.tokenize(label.as_bytes(), false, false)
        }
    }

    /// Drop KV cells past the prompt (label or generated tokens), keeping the prompt.
    fn trim_to_prompt(&mut self, n: usize) -> Result<(), String> {
        self.ctx
            .kv_cache_seq_rm(0, Some(n as u32), None)
            .map_err(|e| format!("cannot trim the KV cache: {e}"))
    }

    fn complete_one(
        &mut self,
        request: &Request,
        prepared: Prepared,
        strategy: Strategy,
    ) -> Result<Response, String> {
        let start = Instant::now();
        let tokens = prepared.tokens;
        let n = tokens.len();
        let max_tokens = request.max_tokens as usize;
        self.check_fits(n + max_tokens)?;
        let (reused, last) = self.prefill(&tokens, strategy)?;
        let vocab = self.model.vocab();
        let mut sampler = Sampler::new(request);
        let mut logits = self.ctx.get_logits_ith(last).to_vec();
        let mut out = Output::default();
        let mut generated = 0;
        let mut finish = FinishReason::Length;
        while generated < max_tokens {
            let token = sampler.pick(&logits);
            if vocab.is_eog(token) {
                finish = FinishReason::Stop;
                break;
            }
            generated += 1;
            if out.push(&vocab.token_to_piece(token, false, None), &request.stop) {
                finish = FinishReason::Stop;
                break;
            }
            if generated == max_tokens {
                break;
            }
            self.batch.clear();
            self.batch
                .add(token, (n + generated - 1) as i32, &[0], true)
                .map_err(|e| e.to_string())?;
            self.decode()?;
            logits = self.ctx.get_logits_ith(0).to_vec();
        }
        self.trim_to_prompt(n)?;
        Ok(Response {
            text: out.into_text(),
            finish_reason: finish,
            usage: Usage {
                input_tokens: n as u64,
                output_tokens: generated as u64,
                cached_input_tokens: Some(reused as u64),
            },
            model: String::new(),
            latency: start.elapsed(),
            cost_usd: Some(0.0),
            cached: false,
        })
    }

    fn prefill_rate(&mut self, tokens: usize) -> Result<f64, String> {
        let n = tokens.clamp(1, self.context_size);
        let filler = self.model.vocab().tokenize(
            b" the quick brown fox jumps over the lazy dog",
            false,
            false,
        );
        let mut prompt = vec![self.model.vocab().bos()];
        while prompt.len() < n {
            prompt.extend(filler.iter().copied());
        }
        prompt.truncate(n);
        self.trim_to(0)?;
        let start = Instant::now();
        self.prefill(&prompt, Strategy::OneByOne)?;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        self.trim_to(0)?;
        Ok(rate)
    }
}

/// Greedy at temperature 0; otherwise sampling from the tempered distribution with a seed taken
/// from the request (its seed mixed with the sample index), so each sample is reproducible.
pub(crate) struct Sampler {
    temperature: f32,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub(crate) fn new(request: &Request) -> Self {
        let seed = request
            .effective_seed()
            .unwrap_or(0x5EED_0000 ^ u64::from(request.sample));
        Self {
            temperature: request.temperature,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub(crate) fn pick(&mut self, logits: &[f32]) -> LlamaToken {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = f64::from(self.temperature);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights = logits.iter().map(|&x| (f64::from(x - max) / t).exp());
        match WeightedIndex::new(weights) {
            Ok(dist) => LlamaToken(dist.sample(&mut self.rng) as i32),
            Err(_) => argmax(logits),
        }
    }
}

/// The text of a generation as its tokens arrive: bytes become text, a stop sequence ends it,
/// and [`Output::ready`] gives what can be shown before the generation ends.
#[derive(Debug, Default)]
pub(crate) struct Output {
    bytes: Vec<u8>,
    text: String,
    /// Bytes of `text` already handed out by `ready`.
    sent: usize,
}

impl Output {
    /// Add a token's bytes. True when a stop sequence appeared: the text ends before it.
    pub(crate) fn push(&mut self, piece: &[u8], stop: &[String]) -> bool {
        self.bytes.extend_from_slice(piece);
        self.text = String::from_utf8_lossy(&self.bytes).into_owned();
        match stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            Some(cut) => {
                self.text.truncate(cut);
                true
            }
            None => false,
        }
    }

    /// Text not handed out yet that no later token can change: whole characters only (a
    /// token may end inside one), and not a tail that could be the start of a stop sequence.
    pub(crate) fn ready(&mut self, stop: &[String]) -> Option<String> {
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let mut end = valid.min(self.text.len());
        let held = stop
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(k, _)| &s[..k]))
            .filter(|prefix| self.text[..end].ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        end -= held;
        if end <= self.sent {
            return None;
        }
        let piece = self.text[self.sent..end].to_string();
        self.sent = end;
        Some(piece)
    }

    /// What `ready` has not handed out, once the generation is over.
    pub(crate) fn rest(&mut self) -> Option<String> {
        let piece = self
            .text
            .get(self.sent..)
            .filter(|p| !p.is_empty())?
            .to_string();
        self.sent = self.text.len();
        Some(piece)
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

/// Requests that carry a prompt.
pub(crate) trait HasPrompt {
    fn prompt(&self) -> &Prompt;
}

impl HasPrompt for Request {
    fn prompt(&self) -> &Prompt {
        &self.prompt
    }
}

impl HasPrompt for ScoreRequest {
    fn prompt(&self) -> &Prompt {
        &self.prompt
    }
}

#[cfg(test)]
mod tests {
    use super::Output;

    fn stream(pieces: &[&[u8]], stop: &[&str]) -> (Vec<String>, String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut out = Output::default();
        let mut sent = Vec::new();
        let mut stopped = false;
        for p in pieces {
            if out.push(p, &stop) {
                stopped = true;
                break;
            }
            sent.extend(out.ready(&stop));
        }
        sent.extend(out.rest());
        (sent, out.into_text(), stopped)
    }

    #[test]
    fn pieces_add_up_to_the_text_and_never_split_a_character() {
        // "é" is two bytes; a token may end between them.
        let (sent, text, _) = stream(&[b"caf", b"\xc3", b"\xa9 ok"], &[]);
        assert_eq!(text, "café ok");
        assert_eq!(sent.concat(), text);
        assert_eq!(sent, ["caf", "é ok"]);
    }

    #[test]
    fn a_possible_stop_sequence_is_held_back_until_it_is_decided() {
        let (sent, text, stopped) = stream(&[b"yes", b"\n", b"Q", b":"], &["\nQ:"]);
        assert!(stopped);
        assert_eq!(text, "yes");
        assert_eq!(
            sent.concat(),
            "yes",
            "{sent:?}: the stop's start was never sent"
        );
        // Not a stop after all: the held-back text goes out.
        let (sent, text, stopped) = stream(&[b"yes", b"\n", b"no"], &["\nQ:"]);
        assert!(!stopped);
        assert_eq!(text, "yes\nno");
        assert_eq!(sent, ["yes", "\nno"]);
    }
}
