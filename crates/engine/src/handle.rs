//! Handles: a started job is a `'static + Send` tokio task, an owned stream of [`Progress`]
//! events over a channel, a cancellation token, and a typed result.

use std::future::Future;

use metaprompt_eval::Summary;
use metaprompt_optimize::run::RoundStats;
use metaprompt_optimize::{Candidate, Event};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::EngineError;

/// What a job reports while it runs: owned, so it can cross a channel, a thread, or (as JSON) a
/// network connection.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// The job has opened its models and starts: one line saying what runs on what.
    Begin { text: String },
    /// A step begins.
    Step { text: String },
    /// The meta model's analysis of the task.
    Analysis { text: String },
    /// A candidate was written and checked (not yet evaluated).
    Candidate { candidate: Box<Candidate> },
    /// Evaluation of the prompt `label` is at `done` of `total` examples.
    Evaluating {
        label: String,
        done: usize,
        total: usize,
    },
    /// Evaluation of the prompt `label` finished.
    Evaluated {
        label: String,
        summary: Box<Summary>,
    },
    /// An optimization round finished.
    Round { stats: Box<RoundStats> },
}

impl Progress {
    /// The owned form of a meta-layer [`Event`].
    pub fn of(e: &Event<'_>) -> Self {
        match e {
            Event::Step(s) => Progress::Step {
                text: (*s).to_string(),
            },
            Event::Analysis(a) => Progress::Analysis {
                text: (*a).to_string(),
            },
            Event::Candidate(c) => Progress::Candidate {
                candidate: Box::new((*c).clone()),
            },
            Event::Evaluating { label, done, total } => Progress::Evaluating {
                label: (*label).to_string(),
                done: *done,
                total: *total,
            },
            Event::Evaluated { label, summary } => Progress::Evaluated {
                label: (*label).to_string(),
                summary: Box::new((*summary).clone()),
            },
            Event::Round(r) => Progress::Round {
                stats: Box::new((*r).clone()),
            },
        }
    }
}

/// The sending side a job reports through. Sending never blocks and never fails the job: a
/// caller that stopped listening just misses events.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Progress>,
}

impl Reporter {
    pub fn send(&self, p: Progress) {
        let _ = self.tx.send(p);
    }

    pub fn step(&self, text: impl Into<String>) {
        self.send(Progress::Step { text: text.into() });
    }

    /// Forward a borrowed meta-layer event.
    pub fn event(&self, e: Event<'_>) {
        self.send(Progress::of(&e));
    }
}

/// A started job.
#[derive(Debug)]
pub struct Handle<T> {
    events: mpsc::UnboundedReceiver<Progress>,
    cancel: CancellationToken,
    task: JoinHandle<Result<T, EngineError>>,
}

impl<T: Send + 'static> Handle<T> {
    /// Start `job` on the tokio runtime; it gets the reporter and the cancellation token.
    pub(crate) fn spawn<F, Fut>(job: F) -> Self
    where
        F: FnOnce(Reporter, CancellationToken) -> Fut,
        Fut: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(job(Reporter { tx }, cancel.clone()));
        Self {
            events,
            cancel,
            task,
        }
    }

    /// The next progress event; `None` once the job has ended and every event was read.
    pub async fn next(&mut self) -> Option<Progress> {
        self.events.recv().await
    }

    /// Ask the job to stop at its next safe point. An optimization leaves a checkpoint that
    /// resumes; other jobs just end. The result is then [`EngineError::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this job (to hand to a signal handler or another task).
    pub fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Wait for the result (events not yet read are dropped).
    pub async fn wait(self) -> Result<T, EngineError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(EngineError::Crashed(e.to_string())),
        }
    }

    /// Read every event with `on_event`, then return the result.
    pub async fn drive(mut self, mut on_event: impl FnMut(Progress)) -> Result<T, EngineError> {
        while let Some(p) = self.next().await {
            on_event(p);
        }
        self.wait().await
    }
}
