//! Group commit for the inference and feedback log. Handlers hand their records to one writer
//! task and wait; the writer takes everything queued (up to [`MAX_BATCH`] records), stores it
//! in one transaction, then answers every waiter. A request is acknowledged only after its
//! records are committed, so an "ok" survives `kill -9`; under load one commit acknowledges
//! hundreds of requests instead of paying a sync each.

use std::sync::Arc;

use metaprompt_registry::ServiceStore;
use metaprompt_registry::service::{Feedback, Inference};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Records stored by one transaction at most.
pub const MAX_BATCH: usize = 4096;

struct Job {
    inferences: Vec<Inference>,
    feedback: Vec<Feedback>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle handlers write through (cheap to clone).
#[derive(Debug, Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("inferences", &self.inferences.len())
            .field("feedback", &self.feedback.len())
            .finish()
    }
}

impl Recorder {
    /// Start the writer. It stops once every `Recorder` clone is dropped and the queue is
    /// written; await the handle to know the log is flushed.
    pub fn start(store: Arc<dyn ServiceStore>) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(MAX_BATCH);
        let task = tokio::spawn(write(store, rx));
        (Self { jobs }, task)
    }

    /// Store the records; `Ok` once they are committed.
    pub async fn record(
        &self,
        inferences: Vec<Inference>,
        feedback: Vec<Feedback>,
    ) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job {
                inferences,
                feedback,
                done,
            })
            .await
            .map_err(|_| "the log writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the log writer stopped before committing".to_string())?
    }
}

async fn write(store: Arc<dyn ServiceStore>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut size = jobs[0].inferences.len() + jobs[0].feedback.len();
        while size < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.inferences.len() + job.feedback.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let inferences: Vec<Inference> = jobs
            .iter()
            .flat_map(|j| j.inferences.iter().cloned())
            .collect();
        let feedback: Vec<Feedback> = jobs
            .iter()
            .flat_map(|j| j.feedback.iter().cloned())
            .collect();
        let result = store
            .record(&inferences, &feedback)
            .await
            .map_err(|e| e.to_string());
        match result {
            Ok(()) => {
                for job in jobs {
                    // A waiter that went away (its client hung up) needs no answer.
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = size, "the inference log refused a batch");
                // One bad request must not fail the others batched with it: write each alone.
                for job in jobs {
                    let alone = if size == job.inferences.len() + job.feedback.len() {
                        Err(e.clone())
                    } else {
                        store
                            .record(&job.inferences, &job.feedback)
                            .await
                            .map_err(|e| e.to_string())
                    };
                    let _ = job.done.send(alone);
                }
            }
        }
    }
}
