//! The canonical context: how the worker (`worker`) evaluates a batch of completions or
//! scores, one request at a time on one sequence, sharing the aligned prompt prefix of
//! consecutive requests, so that every result is the same whatever else is in the batch.
//!
//! # Reproducibility by construction
//!
//! llama.cpp's CPU kernels compute token rows in groups (of four on Gemma; wider on Qwen's
//! shapes); a row's result depends on where it falls in its group, so the same prompt decoded
//! in a different batch layout gives slightly different logits (measured: log-probabilities
//! moving by up to 0.2, enough to flip borderline labels). Every request is therefore
//! evaluated by one canonical procedure that does not depend on its neighbours:
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
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use metaprompt_llm::{
    FinishReason, LabelScores, Prompt, Request, Response, Role, ScoreRequest, Usage,
};

use crate::chat::ChatTemplate;
use crate::error::LocalError;
use crate::generation::{Output, Sampler};
use crate::worker::{WorkerOptions, backend};

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

/// Tokens and what the request costs in them.
pub(crate) struct Prepared {
    pub(crate) tokens: Vec<LlamaToken>,
}

/// The canonical context: one sequence of `context_size` tokens, flash attention off, and the
/// aligned prefix of the last prompt kept for the next.
pub(crate) struct Canonical<'m> {
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

impl<'m> Canonical<'m> {
    pub(crate) fn new(model: &'m LlamaModel, options: &WorkerOptions) -> Result<Self, LocalError> {
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
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| LocalError::Context {
                tokens: options.context_size,
                detail: e.to_string(),
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

    /// Whether chat prompts go through a template of the model's (its own or llama.cpp's).
    pub(crate) fn has_chat_template(&self) -> bool {
        self.template.is_some() || self.own.is_some()
    }

    /// Evaluate a batch in the strategy's order; answers come back in the caller's order.
    pub(crate) fn run_batch<Q, R>(
        &mut self,
        requests: &[Q],
        strategy: Strategy,
        one: fn(&mut Self, &Q, Prepared, Strategy) -> Result<R, LocalError>,
    ) -> Vec<Result<R, LocalError>>
    where
        Q: HasPrompt,
    {
        let prepared: Vec<Result<Prepared, LocalError>> =
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
        let mut results: Vec<Option<Result<R, LocalError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut prepared: Vec<Option<Result<Prepared, LocalError>>> =
            prepared.into_iter().map(Some).collect();
        for i in order {
            let result = match prepared[i].take() {
                Some(Ok(p)) => one(self, &requests[i], p, strategy),
                Some(Err(e)) => Err(e),
                None => Err(LocalError::Internal("request prepared twice")),
            };
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(LocalError::Internal("request skipped"))))
            .collect()
    }

    pub(crate) fn prepare(&self, prompt: &Prompt) -> Result<Prepared, LocalError> {
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
            return Err(LocalError::EmptyPrompt);
        }
        Ok(Prepared { tokens })
    }

    /// Apply the model's own chat template (see [`crate::chat`]); where minijinja cannot
    /// render it, llama.cpp's rendering of its template family; a model without one gets a
    /// plain transcript.
    pub(crate) fn render_chat(
        &self,
        messages: &[metaprompt_llm::Message],
    ) -> Result<String, LocalError> {
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
                .map_err(|e| LocalError::ChatMessage(e.to_string()))?;
            return self
                .model
                .apply_chat_template(template, &chat, true)
                .map_err(|e| LocalError::ChatTemplate(e.to_string()));
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

    pub(crate) fn check_fits(&self, needed: usize) -> Result<(), LocalError> {
        if needed > self.context_size {
            return Err(LocalError::TooLong {
                needed,
                holds: self.context_size,
            });
        }
        Ok(())
    }

    fn decode(&mut self) -> Result<(), LocalError> {
        let (ctx, batch) = (&mut self.ctx, &mut self.batch);
        self.turn
            .hold(|| ctx.decode(batch))
            .map_err(|e| LocalError::Decode(e.to_string()))
    }

    fn trim_to(&mut self, keep: usize) -> Result<(), LocalError> {
        if keep == 0 {
            self.ctx.clear_kv_cache();
        } else {
            self.ctx
                .kv_cache_seq_rm(0, Some(keep as u32), None)
                .map_err(|e| LocalError::Trim(e.to_string()))?;
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
    ) -> Result<(usize, i32), LocalError> {
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
                    .map_err(|e| LocalError::BatchAdd(e.to_string()))?;
            }
            self.decode()?;
            last = (end - start - 1) as i32;
            start = end;
        }
        // Only rows computed in full groups from an aligned start are safe to reuse.
        self.reusable = tokens[..n / ROW_GROUP * ROW_GROUP].to_vec();
        Ok((keep, last))
    }

    pub(crate) fn score_one(
        &mut self,
        request: &ScoreRequest,
        prepared: Prepared,
        strategy: Strategy,
    ) -> Result<LabelScores, LocalError> {
        let start = Instant::now();
        if request.labels.is_empty() {
            return Err(LocalError::NoLabels);
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
            return Err(LocalError::EmptyLabel(request.labels[i].clone()));
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
                        .map_err(|e| LocalError::BatchAdd(e.to_string()))?;
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
    fn trim_to_prompt(&mut self, n: usize) -> Result<(), LocalError> {
        self.ctx
            .kv_cache_seq_rm(0, Some(n as u32), None)
            .map_err(|e| LocalError::Trim(e.to_string()))
    }

    pub(crate) fn complete_one(
        &mut self,
        request: &Request,
        prepared: Prepared,
        strategy: Strategy,
    ) -> Result<Response, LocalError> {
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
                .map_err(|e| LocalError::BatchAdd(e.to_string()))?;
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

    pub(crate) fn prefill_rate(&mut self, tokens: usize) -> Result<f64, LocalError> {
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
