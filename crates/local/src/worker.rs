//! The llama.cpp worker: one thread per model file owns the model and its contexts and serves
//! jobs from a channel, so the async side never blocks and the model is loaded once.
//!
//! The thread fetches (if needed) and loads the model, makes the canonical context (`batch`)
//! at once and the others on first use (the live context, `live`; the embedding context,
//! `embed`; the generation lanes, `lanes`), then answers [`Job`]s until every sender is
//! dropped. While live requests are in flight it alternates: a canonical job runs whole between
//! two live decode steps.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use metaprompt_llm::{LabelScores, Prompt, Request, Response, ScoreRequest};
use tokio::sync::oneshot;

use crate::batch::{Canonical, Strategy};
use crate::embed::Embedder;
use crate::error::LocalError;
use crate::fetch::{self, ModelRef};
use crate::lanes::{Lanes, LanesStats};
use crate::live::{Live, LiveBatch, LiveStats};

/// What the worker's contexts are made with (from [`crate::LocalOptions`]).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
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

/// What the worker is asked to do; each job carries the channel its answer goes back on.
pub(crate) enum Job {
    Complete {
        requests: Vec<Request>,
        strategy: Strategy,
        reply: oneshot::Sender<Vec<Result<Response, LocalError>>>,
    },
    Score {
        requests: Vec<ScoreRequest>,
        strategy: Strategy,
        reply: oneshot::Sender<Vec<Result<LabelScores, LocalError>>>,
    },
    Facts {
        reply: oneshot::Sender<Result<ModelFacts, LocalError>>,
    },
    /// Decode one prompt of `tokens` tokens from scratch; reply with tokens per second.
    PrefillRate {
        tokens: usize,
        reply: oneshot::Sender<Result<f64, LocalError>>,
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
        reply: oneshot::Sender<Result<String, LocalError>>,
    },
    /// Mean-pooled embeddings of texts (see [`crate::embed`]).
    Embed {
        texts: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, LocalError>>,
    },
}

impl Job {
    /// Answer the job with `error` (every request of a batch gets it).
    fn fail(self, error: &LocalError) {
        // A caller that stopped waiting is no error of ours.
        match self {
            Job::Complete {
                requests, reply, ..
            } => {
                let _ = reply.send(requests.iter().map(|_| Err(error.clone())).collect());
            }
            Job::Score {
                requests, reply, ..
            } => {
                let _ = reply.send(requests.iter().map(|_| Err(error.clone())).collect());
            }
            Job::Facts { reply } => {
                let _ = reply.send(Err(error.clone()));
            }
            Job::PrefillRate { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Job::Live(live) => {
                let _ = live.reply.send(Err(error.clone()));
            }
            Job::LiveStats { reply } => {
                let _ = reply.send(LiveStats::default());
            }
            Job::LanesStats { reply } => {
                let _ = reply.send(LanesStats::default());
            }
            Job::Render { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Job::Embed { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// llama.cpp's backend is process-wide state: initialised once, logs silenced.
pub(crate) fn backend() -> Result<&'static LlamaBackend, LocalError> {
    static BACKEND: OnceLock<Result<LlamaBackend, LocalError>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| LocalError::Backend(e.to_string()))?;
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Start the worker thread of one model. It fetches (if needed) and loads the model, then serves
/// jobs until every sender is dropped.
pub(crate) fn spawn(model: ModelRef, options: WorkerOptions) -> Result<Sender<Job>, LocalError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("metaprompt-llama".into())
        .spawn(move || worker(model, options, rx))
        .map_err(|e| LocalError::Thread(e.to_string()))?;
    Ok(tx)
}

/// The thread's body: load the model (or answer every job with why it did not load), then
/// serve jobs.
fn worker(model_ref: ModelRef, options: WorkerOptions, rx: Receiver<Job>) {
    let started = Instant::now();
    let loaded = (|| {
        if let Some(p) = crate::cpu::problem() {
            return Err(LocalError::Cpu(p));
        }
        let path = fetch::ensure(
            &model_ref,
            &options.models_dir,
            &options.python,
            &fetch::Log,
        )?;
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
            .map_err(|e| LocalError::Load {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        Ok::<_, LocalError>((path, model))
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
    let mut canonical = match Canonical::new(&model, &options) {
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
        has_chat_template: canonical.has_chat_template(),
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
                batch.step(&canonical);
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
                    let _ = reply.send(l.complete(&canonical, &requests));
                }
            }
            Job::Complete {
                requests,
                strategy,
                reply,
            } => {
                let _ =
                    reply.send(canonical.run_batch(&requests, strategy, Canonical::complete_one));
            }
            Job::Score {
                requests,
                strategy,
                reply,
            } => {
                let _ = reply.send(canonical.run_batch(&requests, strategy, Canonical::score_one));
            }
            Job::Facts { reply } => {
                let _ = reply.send(Ok(facts.clone()));
            }
            Job::PrefillRate { tokens, reply } => {
                let _ = reply.send(canonical.prefill_rate(tokens));
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
                    Prompt::Chat(m) => canonical.render_chat(m),
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
