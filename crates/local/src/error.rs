//! What can go wrong in the embedded model, from loading it to decoding a request: one enum,
//! [`LocalError`], answered by the worker thread and turned into the provider layer's
//! [`LlmError::Backend`](metaprompt_llm::LlmError::Backend) (its message is this error's text)
//! at the edge of the crate, in [`crate::LocalProvider`].
//!
//! Fetching keeps its own [`FetchError`] (the `model pull` command shows it as it is); a failed
//! fetch before a load arrives here whole, as [`LocalError::Fetch`].
//!
//! A failure is often answered to several callers (every request of a batch, every job sent to
//! a model that did not load), so the error is `Clone`; llama.cpp's own errors are not, and are
//! kept as their text (`detail`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::fetch::FetchError;

/// An error of the embedded model. Its text is what the user sees (as the model's backend
/// error), so each variant's message is part of the CLI's output.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LocalError {
    // Loading the model.
    /// This CPU cannot run the llama.cpp build ([`crate::cpu::problem`] says why).
    #[error("{0}")]
    Cpu(String),
    /// The model file could not be fetched or verified.
    #[error(transparent)]
    Fetch(Arc<FetchError>),
    #[error("cannot initialise llama.cpp: {0}")]
    Backend(String),
    #[error("cannot start the model thread: {0}")]
    Thread(String),
    #[error("cannot load {path} as a GGUF model: {detail}")]
    Load { path: PathBuf, detail: String },

    // Making a context.
    /// The canonical context (see `batch`).
    #[error("cannot create a context of {tokens} tokens: {detail}")]
    Context { tokens: u32, detail: String },
    /// The generation lanes' context (see `lanes`).
    #[error("cannot create {width} generation lanes of {per_lane} tokens: {detail}")]
    LanesContext {
        width: usize,
        per_lane: usize,
        detail: String,
    },
    /// The live context (see `live`).
    #[error(
        "cannot create the live context ({slots} sequences of {tokens} tokens; lower [local] parallel or context_size): {detail}"
    )]
    LiveContext {
        slots: u32,
        tokens: u32,
        detail: String,
    },
    #[error("cannot create the embedding context: {0}")]
    EmbeddingContext(String),

    // A request that cannot be evaluated.
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("a score request needs at least one label")]
    NoLabels,
    /// A label that tokenizes to nothing (the label as given).
    #[error("label {0:?} has no tokens")]
    EmptyLabel(String),
    #[error(
        "the request needs {needed} tokens of context but the local context holds {holds} (raise [local] context_size in metaprompt.toml)"
    )]
    TooLong { needed: usize, holds: usize },

    // Chat templates (see `chat`).
    #[error("the model's chat template does not compile: {0}")]
    TemplateCompile(String),
    #[error("the model's chat template failed: {0}")]
    TemplateRender(String),
    #[error("a chat message cannot be passed to llama.cpp: {0}")]
    ChatMessage(String),
    /// llama.cpp's rendering of its template family failed.
    #[error("chat template failed: {0}")]
    ChatTemplate(String),

    // Decoding.
    /// A token did not fit llama.cpp's batch (llama.cpp's message as it is).
    #[error("{0}")]
    BatchAdd(String),
    #[error("cannot fill the embedding batch: {0}")]
    EmbeddingBatch(String),
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    #[error("llama.cpp decode (embeddings) failed: {0}")]
    EmbeddingDecode(String),
    #[error("llama.cpp gave no pooled embedding: {0}")]
    NoEmbedding(String),
    #[error("cannot trim the KV cache: {0}")]
    Trim(String),
    #[error("cannot copy a KV stream: {0}")]
    CopyStream(String),

    // Neither the model nor the request.
    /// A live request whose caller stopped waiting (see `live`).
    #[error("the caller went away")]
    CallerGone,
    /// A bug of ours: a request answered twice or not at all.
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl From<FetchError> for LocalError {
    fn from(e: FetchError) -> Self {
        Self::Fetch(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users see are those the crate wrote before the errors were typed.
    #[test]
    fn each_error_reads_as_before() {
        let cases = [
            (
                LocalError::Cpu("this CPU lacks AVX2".into()),
                "this CPU lacks AVX2",
            ),
            (
                FetchError::Missing(PathBuf::from("/m/x.gguf")).into(),
                "/m/x.gguf: no such model file",
            ),
            (
                LocalError::Backend("e".into()),
                "cannot initialise llama.cpp: e",
            ),
            (
                LocalError::Thread("e".into()),
                "cannot start the model thread: e",
            ),
            (
                LocalError::Load {
                    path: PathBuf::from("/m/x.gguf"),
                    detail: "e".into(),
                },
                "cannot load /m/x.gguf as a GGUF model: e",
            ),
            (
                LocalError::Context {
                    tokens: 4096,
                    detail: "e".into(),
                },
                "cannot create a context of 4096 tokens: e",
            ),
            (
                LocalError::LanesContext {
                    width: 4,
                    per_lane: 512,
                    detail: "e".into(),
                },
                "cannot create 4 generation lanes of 512 tokens: e",
            ),
            (
                LocalError::LiveContext {
                    slots: 8,
                    tokens: 4096,
                    detail: "e".into(),
                },
                "cannot create the live context (8 sequences of 4096 tokens; lower [local] parallel or context_size): e",
            ),
            (
                LocalError::EmbeddingContext("e".into()),
                "cannot create the embedding context: e",
            ),
            (LocalError::EmptyPrompt, "the prompt is empty"),
            (
                LocalError::NoLabels,
                "a score request needs at least one label",
            ),
            (
                LocalError::EmptyLabel(" yes".into()),
                "label \" yes\" has no tokens",
            ),
            (
                LocalError::TooLong {
                    needed: 5000,
                    holds: 4096,
                },
                "the request needs 5000 tokens of context but the local context holds 4096 (raise [local] context_size in metaprompt.toml)",
            ),
            (
                LocalError::TemplateCompile("e".into()),
                "the model's chat template does not compile: e",
            ),
            (
                LocalError::TemplateRender("e".into()),
                "the model's chat template failed: e",
            ),
            (
                LocalError::ChatMessage("e".into()),
                "a chat message cannot be passed to llama.cpp: e",
            ),
            (
                LocalError::ChatTemplate("e".into()),
                "chat template failed: e",
            ),
            (
                LocalError::BatchAdd("Insufficient Space of 512".into()),
                "Insufficient Space of 512",
            ),
            (
                LocalError::EmbeddingBatch("e".into()),
                "cannot fill the embedding batch: e",
            ),
            (LocalError::Decode("e".into()), "llama.cpp decode failed: e"),
            (
                LocalError::EmbeddingDecode("e".into()),
                "llama.cpp decode (embeddings) failed: e",
            ),
            (
                LocalError::NoEmbedding("e".into()),
                "llama.cpp gave no pooled embedding: e",
            ),
            (LocalError::Trim("e".into()), "cannot trim the KV cache: e"),
            (
                LocalError::CopyStream("e".into()),
                "cannot copy a KV stream: e",
            ),
            (LocalError::CallerGone, "the caller went away"),
            (
                LocalError::Internal("request skipped"),
                "internal: request skipped",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
