//! Prometheus metrics, in a registry the server owns (no global recorder): requests and their
//! latency per route, the gateway's own overhead (a request's time less its model call's),
//! inferences and feedback recorded, model calls in flight.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromptLabels {
    pub prompt: String,
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    /// A gateway request's time less the time it waited on its model.
    pub overhead: Family<RouteLabels, Histogram>,
    pub inferences: Family<PromptLabels, Counter>,
    pub feedback: Counter<u64, AtomicU64>,
    pub in_flight: Gauge,
    pub log_queue: Gauge,
    /// How long a request waited for its records to be committed (the durable log's share of
    /// the gateway overhead).
    pub log_wait: Histogram,
    /// How long each group commit took (one per batch, the writer's side of `log_wait`).
    pub log_commit: Histogram,
}

/// Fine buckets around the gateway's 5 ms goal.
fn overhead_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

fn latency_histogram() -> Histogram {
    // 0.1 ms … ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("metaprompt");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let overhead = Family::<RouteLabels, Histogram>::new_with_constructor(
            overhead_histogram as fn() -> Histogram,
        );
        let inferences = Family::<PromptLabels, Counter>::default();
        let feedback = Counter::<u64, AtomicU64>::default();
        let in_flight = Gauge::default();
        let log_queue = Gauge::default();
        let log_wait = overhead_histogram();
        let log_commit = overhead_histogram();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "gateway_overhead_seconds",
            "Time a request that called a model spent outside the model call (auth, resolving, \
             rendering, recording, answering), by route",
            overhead.clone(),
        );
        registry.register(
            "inferences",
            "Prompt runs recorded, by prompt and outcome (ok, error)",
            inferences.clone(),
        );
        registry.register("feedback", "Feedback events recorded", feedback.clone());
        registry.register(
            "model_calls_in_flight",
            "Model calls the gateway is waiting on",
            in_flight.clone(),
        );
        registry.register(
            "log_writes_waiting",
            "Requests waiting for the inference log to commit",
            log_queue.clone(),
        );
        registry.register(
            "log_wait_seconds",
            "Time a request waited for its inference or feedback records to be committed",
            log_wait.clone(),
        );
        registry.register(
            "log_commit_seconds",
            "Time each group commit of the inference log took (one per batch of requests)",
            log_commit.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            latency,
            overhead,
            inferences,
            feedback,
            in_flight,
            log_queue,
            log_wait,
            log_commit,
        })
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# metrics could not be encoded\n");
        }
        out
    }
}
