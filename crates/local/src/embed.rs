//! Sentence embeddings from the embedded model: its last hidden states, mean-pooled over the
//! text's tokens, unit length. Prompts that pick demonstrations per input compare inputs with
//! them (`metaprompt_eval::select`).
//!
//! The same canonical procedure as `batch`: one text per decode call, from an
//! empty cache, so a text's vector never depends on which texts came with it. Vectors are
//! memoised by text (a demonstration pool is embedded once per process, not once per
//! evaluation).

use std::collections::HashMap;
use std::num::NonZeroU32;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;

use crate::batch::{FLASH_ATTENTION_DISABLED, N_BATCH};
use crate::error::LocalError;
use crate::worker::{WorkerOptions, backend};

/// Texts longer than this many tokens are embedded by their first `MAX_TOKENS`.
const MAX_TOKENS: usize = N_BATCH;
/// Memoised vectors kept before the memo is cleared.
const MEMO: usize = 50_000;

pub(crate) struct Embedder<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    memo: HashMap<String, Vec<f32>>,
    turn: crate::cores::Turn,
}

impl<'m> Embedder<'m> {
    pub(crate) fn new(model: &'m LlamaModel, options: &WorkerOptions) -> Result<Self, LocalError> {
        let threads = options.threads.max(1) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(MAX_TOKENS as u32))
            .with_n_batch(MAX_TOKENS as u32)
            .with_n_ubatch(MAX_TOKENS as u32)
            .with_n_seq_max(1)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(FLASH_ATTENTION_DISABLED);
        let ctx = model
            .new_context(backend()?, params)
            .map_err(|e| LocalError::EmbeddingContext(e.to_string()))?;
        Ok(Self {
            model,
            ctx,
            batch: LlamaBatch::new(MAX_TOKENS, 1),
            memo: HashMap::new(),
            turn: crate::cores::Turn::open(&options.models_dir, options.share_cores),
        })
    }

    /// One unit vector per text, in order.
    pub(crate) fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, LocalError> {
        texts.iter().map(|t| self.one(t)).collect()
    }

    fn one(&mut self, text: &str) -> Result<Vec<f32>, LocalError> {
        if let Some(v) = self.memo.get(text) {
            return Ok(v.clone());
        }
        let mut tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
        tokens.truncate(MAX_TOKENS);
        self.ctx.clear_kv_cache();
        self.batch.clear();
        for (pos, &t) in tokens.iter().enumerate() {
            self.batch
                .add(t, pos as i32, &[0], true)
                .map_err(|e| LocalError::EmbeddingBatch(e.to_string()))?;
        }
        let (ctx, batch) = (&mut self.ctx, &mut self.batch);
        self.turn
            .hold(|| ctx.decode(batch))
            .map_err(|e| LocalError::EmbeddingDecode(e.to_string()))?;
        let pooled = self
            .ctx
            .embeddings_seq_ith(0)
            .map_err(|e| LocalError::NoEmbedding(e.to_string()))?;
        let norm = pooled
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        let v: Vec<f32> = if norm > 0.0 {
            pooled
                .iter()
                .map(|x| (f64::from(*x) / norm) as f32)
                .collect()
        } else {
            pooled.to_vec()
        };
        if self.memo.len() >= MEMO {
            self.memo.clear();
        }
        self.memo.insert(text.to_string(), v.clone());
        Ok(v)
    }
}
