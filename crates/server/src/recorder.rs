//! Group commit for the inference and feedback log. Handlers hand their records to one writer
//! task and wait; the writer takes everything queued (up to [`MAX_BATCH`] records), stores it
//! in one transaction, then answers every waiter. A request is acknowledged only after its
//! records are committed, so an "ok" survives `kill -9`; under load one commit acknowledges
//! hundreds of requests instead of paying a sync each.

use std::sync::Arc;
use std::time::Instant;

use metaprompt_registry::ServiceStore;
use metaprompt_registry::service::{Feedback, Inference};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

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
    /// Each commit's time goes to `metrics.log_commit`.
    pub fn start(store: Arc<dyn ServiceStore>, metrics: Arc<Metrics>) -> (Self, JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(MAX_BATCH);
        let task = tokio::spawn(write(store, rx, metrics));
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

    /// [`Recorder::record`], counted: `log_writes_waiting` while it waits (also when the
    /// request is dropped midway) and the wait in `log_wait_seconds`.
    pub async fn record_counted(
        &self,
        inferences: Vec<Inference>,
        feedback: Vec<Feedback>,
        metrics: &Metrics,
    ) -> Result<(), String> {
        struct Waiting<'a>(&'a Metrics, Instant);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.log_queue.dec();
                self.0.log_wait.observe(self.1.elapsed().as_secs_f64());
            }
        }
        metrics.log_queue.inc();
        let _waiting = Waiting(metrics, Instant::now());
        self.record(inferences, feedback).await
    }
}

async fn write(store: Arc<dyn ServiceStore>, mut rx: mpsc::Receiver<Job>, metrics: Arc<Metrics>) {
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
        // Moved, not copied, into one batch; each job's share is a range of it.
        let mut inferences: Vec<Inference> = Vec::with_capacity(size);
        let mut feedback: Vec<Feedback> = Vec::new();
        let mut shares = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            let (i, f) = (inferences.len(), feedback.len());
            inferences.append(&mut job.inferences);
            feedback.append(&mut job.feedback);
            shares.push((i..inferences.len(), f..feedback.len()));
        }
        let started = Instant::now();
        let result = store
            .record(&inferences, &feedback)
            .await
            .map_err(|e| e.to_string());
        metrics.log_commit.observe(started.elapsed().as_secs_f64());
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
                let alone = jobs.len() == 1;
                for (job, (i, f)) in jobs.into_iter().zip(shares) {
                    let result = if alone {
                        Err(e.clone())
                    } else {
                        store
                            .record(&inferences[i], &feedback[f])
                            .await
                            .map_err(|e| e.to_string())
                    };
                    let _ = job.done.send(result);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metaprompt_registry::SqliteService;
    use metaprompt_registry::service::InferenceLog;

    fn inference(id: &str) -> Inference {
        Inference {
            id: id.into(),
            prompt: "support".into(),
            hash: "ab".repeat(32),
            seq: 1,
            label: None,
            model: "local:gemma-3-270m".into(),
            inputs: serde_json::json!({"q": id}),
            rendered_hash: "cd".repeat(32),
            output: Some("ok".into()),
            error: None,
            tags: Default::default(),
            metadata: serde_json::Value::Null,
            input_tokens: 1,
            output_tokens: 1,
            cost_usd: None,
            latency_ms: 1.0,
            caller: "app".into(),
            created_at: chrono::Utc::now(),
        }
    }

    // On a current-thread runtime both jobs are queued before the writer runs, so they share
    // one batch, which the duplicate id makes the store refuse.
    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_batch_is_written_job_by_job_and_only_the_bad_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteService::open(&dir.path().join("lib.db"))
                .await
                .unwrap(),
        );
        let (recorder, writer) = Recorder::start(store.clone(), Metrics::new());
        recorder
            .record(vec![inference("inf_1")], vec![])
            .await
            .unwrap();
        let (dup, good) = tokio::join!(
            recorder.record(vec![inference("inf_1")], vec![]),
            recorder.record(vec![inference("inf_2"), inference("inf_3")], vec![]),
        );
        assert!(dup.is_err(), "{dup:?}");
        assert_eq!(good, Ok(()));
        for id in ["inf_1", "inf_2", "inf_3"] {
            assert!(store.inference(id).await.unwrap().is_some(), "{id}");
        }
        drop(recorder);
        writer.await.unwrap();
    }
}
