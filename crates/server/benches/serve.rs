//! The prompt service under load, each figure beside its ceiling measured in the same run (these
//! machines are shared and noisy):
//!
//! - fetch by label at 64 connections: requests/s, p50, p99 — beside `/healthz` (the same HTTP
//!   stack and client doing no work);
//! - run through the gateway against a mock provider answering in 200 ms, with 256
//!   connections, closed loop (the clients in step: bursts of 256) and at 96% of the ideal rate
//!   on a fixed schedule (spread arrivals): throughput beside the ideal N / 0.2 s and p99
//!   overhead beside calling the mock directly with the same client, the server's own overhead
//!   from its `metaprompt_gateway_overhead_seconds` histogram, its wait for the log and each
//!   commit's time; each for `[server] log_sync = "full"` and `"normal"` (two servers);
//! - feedback ingestion with durability (each request answered after its commit): events/s,
//!   one event per request and 100 per batch.
//!
//! `cargo bench -p metaprompt-server --bench serve` (`-- --secs 10` for longer runs). The load
//! generator is a Rust client in this process, on a tokio runtime apart from the server's (as
//! if the server ran in its own process), so it still shares the 2 cores with the server: the
//! figures are a floor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::prompt::PromptFile;
use metaprompt_llm::Config;
use metaprompt_registry::model::{LabelMove, NewVersion, Origin};
use metaprompt_registry::service::{LogSync, Role, Token, mint_token, token_hash};
use metaprompt_server::ServerOptions;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

struct Load {
    requests: usize,
    errors: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let k = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[k]
    }
}

/// `conns` clients sending `make()` requests back to back for `secs` (closed loop: the
/// throughput ceiling; latency then is mostly queueing, `conns / throughput` on average).
async fn load<F>(conns: usize, secs: f64, make: F) -> Load
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    load_paced(conns, None, secs, make).await
}

/// `conns` clients sending `make()` requests for `secs`; with `rate`, at that many requests
/// per second in all (open loop, each client on a fixed schedule). A request whose time came
/// while its client still waited for the previous answer is timed from when it was due, so a
/// stall is charged to every request it delayed (no coordinated omission); one sent on time is
/// timed from when it was sent (tokio's timer wakes up to a millisecond late, which is no
/// latency of the server's).
async fn load_paced<F>(conns: usize, rate: Option<f64>, secs: f64, make: F) -> Load
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let make = Arc::new(make);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut k = 0usize;
            // Clients start spread over one interval, so paced requests do not come in bursts.
            let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
            let first =
                Instant::now() + interval.map_or(Duration::ZERO, |i| i * c as u32 / conns as u32);
            while Instant::now() < deadline {
                let t = match interval {
                    Some(i) => {
                        let due = first + i * k as u32;
                        if due >= deadline {
                            break;
                        }
                        if Instant::now() < due {
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        } else {
                            due
                        }
                    }
                    None => Instant::now(),
                };
                match make(&client, c * 1_000_000 + k).send().await {
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 304 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
                k += 1;
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    Load {
        requests: latencies.len(),
        errors,
        secs,
        latencies,
    }
}

/// A histogram from `/metrics` (`metric` with `filter` in its labels, `""` for any): (upper
/// bound in seconds, cumulative count) per bucket, `+Inf` last.
async fn buckets(base: &str, auth: &str, metric: &str, filter: &str) -> Vec<(f64, u64)> {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let head = format!("{metric}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&head) && l.contains(filter))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect()
}

/// The smallest bucket bound holding at least `p` of the requests counted between two
/// snapshots, and the share within `limit` seconds.
fn bucket_quantile(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> f64 {
    let count =
        |b: &[(f64, u64)], bound: f64| b.iter().find(|(x, _)| *x == bound).map_or(0, |(_, c)| *c);
    let total = after.last().map_or(0, |(_, c)| *c) - before.last().map_or(0, |(_, c)| *c);
    for (bound, c) in after {
        let n = c - count(before, *bound);
        if total > 0 && n as f64 >= p * total as f64 {
            return *bound;
        }
    }
    f64::INFINITY
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn report(name: &str, l: &Load) {
    println!(
        "{name:<44} {:>9.0} req/s   p50 {:>9}   p99 {:>9}   ({} requests, {} errors)",
        l.rps(),
        ms(l.pct(0.50)),
        ms(l.pct(0.99)),
        l.requests,
        l.errors
    );
}

/// The gateway (`POST …/run`) with 256 connections against the server at `base` (its library
/// at `library`), after a one-second warm-up that opens the connections on both hops: closed
/// loop (`rate` `None`), or `rate` requests a second on a fixed schedule. Prints the figures and
/// returns the server's overhead p99 bound, the share within 5 ms, and the p99 bounds of the
/// wait for the log and of each commit (seconds).
async fn gateway(
    base: &str,
    auth: &str,
    library: &std::path::Path,
    mock: &MockServer,
    direct: &Load,
    secs: f64,
    rate: Option<f64>,
) -> (f64, f64, f64, f64) {
    let (b, a2) = (base.to_string(), auth.to_string());
    let gateway_request = move |c: &reqwest::Client, k: usize| {
        c.post(format!("{b}/v1/prompts/support/run"))
            .header("authorization", &a2)
            .json(&json!({"inputs": {"question": format!("invoice {k}")}}))
    };
    let cold = load(256, 1.0, gateway_request.clone()).await;
    let seen = mock.received_requests().await.map_or(0, |r| r.len());
    let route = "route=\"/v1/prompts/{name}/run\"";
    let names = [
        ("metaprompt_gateway_overhead_seconds", route),
        ("metaprompt_log_wait_seconds", ""),
        ("metaprompt_log_commit_seconds", ""),
        ("metaprompt_http_request_duration_seconds", route),
    ];
    let mut before = Vec::new();
    for (metric, filter) in names {
        before.push(buckets(base, auth, metric, filter).await);
    }
    let started = chrono::Utc::now();
    let gateway = load_paced(256, rate, secs.max(2.0), gateway_request).await;
    let mut after = Vec::new();
    for (metric, filter) in names {
        after.push(buckets(base, auth, metric, filter).await);
    }
    let q = |k: usize, p: f64| bucket_quantile(&before[k], &after[k], p);
    // The model call of each measured request as the server timed it (its inference record).
    let mut model_ms: Vec<f64> = metaprompt_registry::open_service(library)
        .await
        .unwrap()
        .inferences(&metaprompt_registry::service::InferenceQuery {
            since: Some(started),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|i| i.latency_ms)
        .collect();
    model_ms.sort_by(f64::total_cmp);
    let model_pct = |p: f64| {
        model_ms
            .get(((model_ms.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    // Calls the provider received for the measured gateway requests: above one per request,
    // the gateway retried (a pooled connection the mock had closed, say).
    let provider_calls = mock.received_requests().await.map_or(0, |r| r.len()) - seen;
    report("  the warm-up second (closed loop)", &cold);
    report("  POST /v1/prompts/support/run", &gateway);
    let ideal = 256.0 / 0.2;
    match rate {
        None => println!(
            "  throughput {:.0} req/s = {:.1}% of the ideal {ideal:.0} (direct: {:.1}%)",
            gateway.rps(),
            100.0 * gateway.rps() / ideal,
            100.0 * direct.rps() / ideal
        ),
        // Its time includes the last answers' 200 ms after the schedule ends.
        Some(r) => println!(
            "  offered {r:.0} req/s = {:.1}% of the ideal {ideal:.0}: {} answered ({} errors), \
             a late one timed from when it was due",
            100.0 * r / ideal,
            gateway.requests,
            gateway.errors
        ),
    }
    println!(
        "  provider calls for the {} answered gateway requests: {provider_calls} ({} errors)",
        gateway.requests, gateway.errors
    );
    let at =
        |b: &[(f64, u64)], limit: f64| b.iter().find(|(x, _)| *x == limit).map_or(0, |(_, c)| *c);
    let total = at(&after[0], f64::INFINITY) - at(&before[0], f64::INFINITY);
    let within =
        100.0 * (at(&after[0], 0.005) - at(&before[0], 0.005)) as f64 / total.max(1) as f64;
    println!(
        "  the server's own overhead (its metrics: request time less the model call): \
         p50 ≤ {} ms, p99 ≤ {} ms, {within:.2}% within 5 ms",
        q(0, 0.5) * 1000.0,
        q(0, 0.99) * 1000.0,
    );
    println!(
        "  as the server saw it: the whole request p99 ≤ {} ms (http_request_duration_seconds), \
         the model call p50 {:.1} ms, p99 {:.1} ms (its {} inference records)",
        q(3, 0.99) * 1000.0,
        model_pct(0.5),
        model_pct(0.99),
        model_ms.len()
    );
    let commits = at(&after[2], f64::INFINITY) - at(&before[2], f64::INFINITY);
    println!(
        "  of which waiting for the durable log (log_wait_seconds): p50 ≤ {} ms, p99 ≤ {} ms; \
         {commits} commits (log_commit_seconds): p50 ≤ {} ms, p99 ≤ {} ms",
        q(1, 0.5) * 1000.0,
        q(1, 0.99) * 1000.0,
        q(2, 0.5) * 1000.0,
        q(2, 0.99) * 1000.0,
    );
    println!(
        "  overhead vs direct: p50 {:+.2} ms, p99 {:+.2} ms",
        (gateway.pct(0.5).as_secs_f64() - direct.pct(0.5).as_secs_f64()) * 1000.0,
        (gateway.pct(0.99).as_secs_f64() - direct.pct(0.99).as_secs_f64()) * 1000.0
    );
    (q(0, 0.99), within, q(1, 0.99), q(2, 0.99))
}

/// The server on a runtime of its own (as many workers as cores, as `metaprompt serve` has), as
/// if in its own process: the load generator's tasks never queue behind the server's, or the
/// server's behind them; the operating system shares the cores between the two.
struct Server {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Server {
    /// Start it with a library holding `support` (labelled `production`) and an admin token:
    /// the server, its base URL, the version's hash and the token.
    fn start(
        mock: String,
        dir: std::path::PathBuf,
        log_sync: LogSync,
    ) -> (Server, String, String, String) {
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (running, hash, secret) = serve(&mock, &dir, log_sync).await;
                started
                    .send((format!("http://{}", running.addr), hash, secret))
                    .unwrap();
                let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
                running.shutdown();
                running.wait().await.unwrap();
            });
        });
        let (base, hash, secret) = ready.recv().unwrap();
        (Server { stop, thread }, base, hash, secret)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

async fn serve(
    mock: &str,
    dir: &std::path::Path,
    log_sync: LogSync,
) -> (metaprompt_server::Running, String, String) {
    let config = Config::parse(&format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\nconcurrency = 512\n\
         [models.\"mock:exec\"]\nformat = \"text\"\n",
        mock
    ))
    .unwrap();
    let library = dir.join("lib.db");
    let store = metaprompt_registry::open(&library).await.unwrap();
    let mut file = PromptFile::from_template("support", "Question: {{ question }}\nTeam:");
    file.target_model = Some("mock:exec".into());
    let v = store
        .add(NewVersion::new("support", file, Origin::Human, "bench"))
        .await
        .unwrap();
    store
        .move_label(&LabelMove {
            prompt: "support".into(),
            label: "production".into(),
            to: Some(v.version.hash.clone()),
            actor: "bench".into(),
            comment: None,
        })
        .await
        .unwrap();
    store.close().await;
    let service = metaprompt_registry::open_service(&library).await.unwrap();
    let secret = mint_token();
    service
        .add_token(
            &Token {
                name: "bench".into(),
                role: Role::Admin,
                created_at: chrono::Utc::now(),
                created_by: "bench".into(),
                revoked_at: None,
            },
            &token_hash(&secret),
        )
        .await
        .unwrap();
    service.close().await;
    let engine = Engine::open(EngineOptions {
        config,
        cache: None,
        library: Some(library.clone()),
        author: "bench".into(),
    })
    .await
    .unwrap();
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        log_sync,
        ..ServerOptions::default()
    };
    let running = metaprompt_server::start(engine, options).await.unwrap();
    (running, v.version.hash, secret)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(200))
                .set_body_json(
                    json!({"choices": [{"text": "billing", "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 10, "completion_tokens": 1}}),
                ),
        )
        .mount(&mock)
        .await;
    let (server, base, hash, secret) =
        Server::start(mock.uri(), dir.path().to_path_buf(), LogSync::Full);
    // The same server with commits written but not fsynced, for the gateway side by side.
    let normal_dir = dir.path().join("normal");
    let (normal, normal_base, _, normal_secret) =
        Server::start(mock.uri(), normal_dir.clone(), LogSync::Normal);
    let gateways = [
        (
            base.clone(),
            dir.path().join("lib.db"),
            format!("Bearer {secret}"),
        ),
        (
            normal_base,
            normal_dir.join("lib.db"),
            format!("Bearer {normal_secret}"),
        ),
    ];
    let auth = format!("Bearer {secret}");
    println!(
        "metaprompt serve · {} cores · {secs} s per measurement",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Fetch by label, 64 connections: the closed-loop ceiling, then latency at the goal's
    // 20k req/s (open loop).
    let (b, a) = (base.clone(), auth.clone());
    let health = load(64, secs, move |c, _| c.get(format!("{b}/healthz"))).await;
    let (b, a2) = (base.clone(), a.clone());
    let fetch = load(64, secs, move |c, _| {
        c.get(format!("{b}/v1/prompts/support?label=production"))
            .header("authorization", &a2)
    })
    .await;
    let (b, a2) = (base.clone(), a.clone());
    let tag = format!("\"{hash}\"");
    let revalidate = load(64, secs, move |c, _| {
        c.get(format!("{b}/v1/prompts/support"))
            .header("authorization", &a2)
            .header("if-none-match", &tag)
    })
    .await;
    println!("\nfetch by label, 64 connections");
    report("  /healthz (ceiling: HTTP + client, no work)", &health);
    report("  GET /v1/prompts/support?label=production", &fetch);
    report("  the same with If-None-Match (304)", &revalidate);
    println!(
        "  fetch / ceiling: {:.2}",
        fetch.rps() / health.rps().max(1e-9)
    );
    let (b, a2) = (base.clone(), a.clone());
    let health_paced = load_paced(64, Some(20_000.0), secs, move |c, _| {
        c.get(format!("{b}/healthz")).header("authorization", &a2)
    })
    .await;
    let (b, a2) = (base.clone(), a.clone());
    let fetch_paced = load_paced(64, Some(20_000.0), secs, move |c, _| {
        c.get(format!("{b}/v1/prompts/support?label=production"))
            .header("authorization", &a2)
    })
    .await;
    println!("fetch by label at 20,000 req/s (open loop), 64 connections");
    report("  /healthz", &health_paced);
    report("  GET /v1/prompts/support?label=production", &fetch_paced);

    // 2. The gateway against a 200 ms provider, 256 concurrent: each measured after a
    // 1-second warm-up at the same concurrency (the first burst opens 256 connections at once,
    // on both hops; reported apart).
    let mock_url = format!("{}/v1/completions", mock.uri());
    let direct_request = move |c: &reqwest::Client, _| {
        c.post(&mock_url)
            .json(&json!({"model": "exec", "prompt": "Question: x\nTeam:", "max_tokens": 4}))
    };
    let cold = load(256, 1.0, direct_request.clone()).await;
    let direct = load(256, secs.max(2.0), direct_request.clone()).await;
    // The closed loop runs the 256 clients in step (each answer takes the same 200 ms, so all
    // of them come back within a millisecond or two, every 200 ms): the worst burst. At 96% of
    // the ideal rate on a fixed schedule, requests arrive spread out, as independent callers'
    // do.
    let rate = 0.96 * 256.0 / 0.2;
    let direct_paced = load_paced(256, Some(rate), secs.max(2.0), direct_request).await;
    println!("\ngateway, provider answering in 200 ms, 256 connections");
    report("  the mock provider directly (first second)", &cold);
    report("  the mock provider directly", &direct);
    report(&format!("  the same at {rate:.0} req/s"), &direct_paced);
    let mut summary = Vec::new();
    for (sync, (base, library, auth)) in ["full", "normal"].into_iter().zip(&gateways) {
        for (how, rate, direct) in [
            ("closed loop", None, &direct),
            ("paced", Some(rate), &direct_paced),
        ] {
            match rate {
                None => println!("\n[server] log_sync = \"{sync}\", closed loop"),
                Some(r) => println!("\n[server] log_sync = \"{sync}\", {r:.0} req/s (open loop)"),
            }
            let g = gateway(base, auth, library, &mock, direct, secs, rate).await;
            summary.push((sync, how, g));
        }
    }
    println!("\ngateway overhead side by side (the server's own, and the wait for the log)");
    for (sync, how, (p99, within, wait_p99, commit_p99)) in summary {
        println!(
            "  log_sync = {sync:<7} {how:<12} overhead p99 ≤ {} ms, {within:.2}% within 5 ms; \
             log wait p99 ≤ {} ms; commit p99 ≤ {} ms",
            p99 * 1000.0,
            wait_p99 * 1000.0,
            commit_p99 * 1000.0
        );
    }

    // 3. Feedback ingestion (durable: answered after commit).
    let client = reqwest::Client::new();
    let ran: Value = client
        .post(format!("{base}/v1/prompts/support/run"))
        .header("authorization", &a)
        .json(&json!({"inputs": {"question": "invoice"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = ran["inference_id"].as_str().unwrap().to_string();
    let (b, a2, id2) = (base.clone(), a.clone(), id.clone());
    let one = load(64, secs, move |c, _| {
        c.post(format!("{b}/v1/feedback"))
            .header("authorization", &a2)
            .json(&json!({"inference_id": id2, "score": 1}))
    })
    .await;
    let (b, a2) = (base.clone(), a.clone());
    let items: Vec<Value> = (0..100)
        .map(|k| json!({"inference_id": id, "score": (k % 2) as f64}))
        .collect();
    let body = json!({ "items": items });
    let batch = load(16, secs, move |c, _| {
        c.post(format!("{b}/v1/feedback:batch"))
            .header("authorization", &a2)
            .json(&body)
    })
    .await;
    println!("\nfeedback ingestion, each request answered after its commit");
    report("  POST /v1/feedback, 64 connections", &one);
    report("  POST /v1/feedback:batch (100 each), 16 conn.", &batch);
    println!(
        "  events/s: {:.0} one per request, {:.0} in batches of 100",
        one.rps(),
        batch.rps() * 100.0
    );
    server.stop();
    normal.stop();
}
