//! Faults, as a hostile world serves them: a loopback OpenAI-compatible mock that fails a fifth
//! of its first attempts in every way a provider or proxy does (429 with Retry-After, 500, an
//! HTML 502, a 200 with an HTML body, a 200 with truncated JSON, a stall past the timeout); a
//! raw TCP front that drops connections (closed unanswered, or halfway through the answer); a
//! model that refuses some test examples; and one that echoes the API key back in its errors.
//! `eval` and `optimize` must give the scores of a fault-free run or fail loudly — never a
//! different number with exit 0 — and the key must appear in no file the tool wrote and in no
//! output.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{metaprompt, stderr, stdout};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const FAULTS: usize = 6;

/// Answers a text completion ("positive" when the review says "great", else "negative") and a
/// chat meta call (an instruction); with `faulty`, the first attempt of every fifth distinct
/// request fails, each fault kind in turn.
struct World {
    faulty: bool,
    /// Answer with `Connection: close`, so every request comes on a connection of its own.
    close: bool,
    attempts: Mutex<HashMap<String, usize>>,
}

impl World {
    fn new(faulty: bool) -> Self {
        Self {
            faulty,
            close: false,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn closing() -> Self {
        Self {
            close: true,
            ..Self::new(false)
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Respond for World {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let answer = self.answer(request);
        if self.close {
            answer.insert_header("connection", "close")
        } else {
            answer
        }
    }
}

impl World {
    fn answer(&self, request: &Request) -> ResponseTemplate {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(text.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let h = fnv(&text);
        if self.faulty && attempt == 1 && h.is_multiple_of(5) {
            let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
            return match (h / 5) as usize % FAULTS {
                0 => ResponseTemplate::new(429)
                    .insert_header("retry-after", "0")
                    .set_body_json(json!({"error": {"message": "slow down"}})),
                1 => ResponseTemplate::new(500).set_body_string("internal error"),
                2 => ResponseTemplate::new(502)
                    .insert_header("content-type", "text/html")
                    .set_body_string(html),
                3 => ResponseTemplate::new(200)
                    .insert_header("content-type", "text/html")
                    .set_body_string(html),
                4 => ResponseTemplate::new(200)
                    .insert_header("content-type", "application/json")
                    .set_body_string("{\"choices\": [{\"text\": \"posi"),
                _ => ResponseTemplate::new(200)
                    .set_delay(Duration::from_secs(3))
                    .set_body_json(json!({"choices": [{"text": "stalled"}]})),
            };
        }
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        let usage = json!({"prompt_tokens": 12, "completion_tokens": 1});
        if let Some(prompt) = body["prompt"].as_str() {
            let last = prompt
                .lines()
                .rev()
                .find(|l| l.starts_with("Review:"))
                .unwrap_or("");
            let answer = if last.contains("great") {
                "positive"
            } else {
                "negative"
            };
            return ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"text": answer, "finish_reason": "stop"}], "usage": usage
            }));
        }
        let seed = body["seed"].as_u64().unwrap_or(0);
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant",
                "content": format!("<prompt>Label the review, variant {}.</prompt>", seed % 97)},
                "finish_reason": "stop"}],
            "usage": usage
        }))
    }
}

async fn serve(world: impl Respond + 'static) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(world)
        .mount(&server)
        .await;
    server
}

/// A task on the mock models, and the config that points at `server`.
fn setup(dir: &Path, server: &MockServer, key_env: Option<&str>) -> String {
    setup_at(dir, &server.uri(), key_env)
}

/// A task on the mock models, and the config that points at the server at `uri`.
fn setup_at(dir: &Path, uri: &str, key_env: Option<&str>) -> String {
    let rows = |range: std::ops::Range<usize>| {
        range
            .map(|i| {
                let (word, label) = if i % 3 == 0 {
                    ("great", "positive")
                } else {
                    ("dull", "negative")
                };
                json!({"sentence": format!("review {i}: a {word} film"), "label": label})
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(dir.join("train.jsonl"), rows(100..112)).unwrap();
    std::fs::write(dir.join("dev.jsonl"), rows(0..40)).unwrap();
    std::fs::write(dir.join("test.jsonl"), rows(200..220)).unwrap();
    let key = key_env
        .map(|k| format!("api_key_env = \"{k}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("metaprompt.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\n{key}timeout_secs = 1\n\
             retry_base_ms = 10\nmax_retries = 4\n\
             [models.\"mock:exec\"]\nformat = \"text\"\npricing = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n\
             [models.\"mock:meta\"]\nformat = \"chat\"\npricing = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n",
            uri
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("task.toml"),
        "name = \"faults\"\ndescription = \"Label the review.\"\ninputs = [\"sentence\"]\n\
         output = \"label\"\n[prompt]\nname = \"seed\"\ntemplate = \"Review: {{ sentence }}\\nLabel:\"\n\
         [data]\ntrain = \"train.jsonl\"\ndev = \"dev.jsonl\"\ntest = \"test.jsonl\"\n\
         [[metrics]]\ntype = \"choice\"\nlabels = [\"negative\", \"positive\"]\n\
         [models]\nexecution = \"mock:exec\"\nmeta = \"mock:meta\"\nmax_tokens = 4\n",
    )
    .unwrap();
    dir.join("task.toml").to_string_lossy().into_owned()
}

async fn eval_score(dir: &Path, task: &str) -> (std::process::Output, Value) {
    let out = metaprompt(dir, &["--no-cache", "eval", task, "--json"], &[]).await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

const OPTIMIZE: &[&str] = &[
    "--no-cache",
    "--no-library",
    "optimize",
    "TASK",
    "--algo",
    "opro",
    "--rounds",
    "2",
    "--per-round",
    "2",
    "--minibatch",
    "10",
    "--json",
    "--yes",
];

async fn optimize(dir: &Path, task: &str, run: &str) -> (std::process::Output, Value) {
    let mut args: Vec<&str> = OPTIMIZE
        .iter()
        .map(|a| if *a == "TASK" { task } else { a })
        .collect();
    args.extend(["--run-dir", run]);
    let out = metaprompt(dir, &args, &[]).await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_faults_give_the_fault_free_scores() {
    let clean = serve(World::new(false)).await;
    let faulty = serve(World::new(true)).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ta, tb) = (
        setup(a.path(), &clean, None),
        setup(b.path(), &faulty, None),
    );

    let ((oa, ea), (ob, eb)) = tokio::join!(eval_score(a.path(), &ta), eval_score(b.path(), &tb));
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    assert_eq!(ea["score"], eb["score"], "eval under faults");
    assert_eq!(eb["errors"], 0);
    assert_eq!(ea["examples"], 40);

    let ra = a.path().join("run").to_string_lossy().into_owned();
    let rb = b.path().join("run").to_string_lossy().into_owned();
    let ((oa, pa), (ob, pb)) =
        tokio::join!(optimize(a.path(), &ta, &ra), optimize(b.path(), &tb, &rb));
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    for key in [
        "winner",
        "best",
        "seed_dev",
        "best_dev",
        "winner_test",
        "kept_seed",
    ] {
        assert_eq!(pa[key], pb[key], "optimize under faults: {key}");
    }
    assert_eq!(pb["unscored"]["count"], 0, "{}", pb["unscored"]);
    // The faults happened and were retried: the faulty server answered more requests, about a
    // fifth more, than the clean one for the same work.
    let clean_n = clean.received_requests().await.unwrap().len();
    let faulty_n = faulty.received_requests().await.unwrap().len();
    assert!(
        faulty_n as f64 > clean_n as f64 * 1.1,
        "{faulty_n} requests under faults vs {clean_n} without"
    );
}

/// What the dropping front did.
#[derive(Default)]
struct Dropped {
    /// Connections accepted and closed without an answer.
    unanswered: AtomicUsize,
    /// Connections closed in the middle of the answer.
    cut: AtomicUsize,
    forwarded: AtomicUsize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Read one HTTP request (head and `Content-Length` body) from `stream`.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(buf);
            }
        }
    }
}

/// A raw TCP front on 127.0.0.1 for the server at `upstream` (wiremock cannot drop a
/// connection): the first attempt of every fifth distinct request loses its connection —
/// closed unanswered, or closed halfway through the answer's body — and everything else is
/// passed through. Returns its base URL.
async fn dropping_front(upstream: SocketAddr, stats: Arc<Dropped>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (stats, attempts) = (stats.clone(), attempts.clone());
            tokio::spawn(async move {
                let _ = front_one(client, upstream, &stats, &attempts).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn front_one(
    mut client: TcpStream,
    upstream: SocketAddr,
    stats: &Dropped,
    attempts: &Mutex<HashMap<u64, usize>>,
) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let body = find(&request, b"\r\n\r\n").map_or(&request[..], |e| &request[e + 4..]);
    let h = fnv(&String::from_utf8_lossy(body));
    let attempt = {
        let mut a = attempts.lock().unwrap();
        let n = a.entry(h).or_insert(0);
        *n += 1;
        *n
    };
    let fault = attempt == 1 && h.is_multiple_of(5);
    if fault && (h / 5).is_multiple_of(2) {
        stats.unanswered.fetch_add(1, Ordering::SeqCst);
        return Ok(()); // dropped: closed without an answer
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&request).await?;
    if !fault {
        stats.forwarded.fetch_add(1, Ordering::SeqCst);
        tokio::io::copy_bidirectional(&mut client, &mut up).await?;
        return Ok(());
    }
    // Cut: the head and half the body, then the connection closes.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = up.read(&mut chunk).await?;
        answer.extend_from_slice(&chunk[..n]);
        if let Some(e) = find(&answer, b"\r\n\r\n")
            && (answer.len() > e + 5 || n == 0)
        {
            break e + 4;
        }
        if n == 0 {
            break answer.len();
        }
    };
    let keep = head_end + (answer.len() - head_end) / 2;
    client.write_all(&answer[..keep]).await?;
    stats.cut.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_are_retried_to_the_fault_free_score() {
    let clean = serve(World::new(false)).await;
    let behind = serve(World::closing()).await;
    let stats = Arc::new(Dropped::default());
    let front = dropping_front(*behind.address(), stats.clone()).await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ta, tb) = (
        setup(a.path(), &clean, None),
        setup_at(b.path(), &front, None),
    );
    let ((oa, ea), (ob, eb)) = tokio::join!(eval_score(a.path(), &ta), eval_score(b.path(), &tb));
    assert!(oa.status.success(), "{}", stderr(&oa));
    assert!(ob.status.success(), "{}", stderr(&ob));
    assert_eq!(ea["score"], eb["score"], "eval through dropped connections");
    assert_eq!(
        (eb["errors"].as_u64(), eb["examples"].as_u64()),
        (Some(0), Some(40))
    );
    let (unanswered, cut) = (
        stats.unanswered.load(Ordering::SeqCst),
        stats.cut.load(Ordering::SeqCst),
    );
    assert!(
        unanswered > 0 && cut > 0,
        "the faults happened: {unanswered} unanswered, {cut} cut, {} forwarded",
        stats.forwarded.load(Ordering::SeqCst)
    );
}

/// The execution model refuses (400, not retried) the test examples numbered 210 to 219.
struct RefusesSomeTestRows(World);

impl Respond for RefusesSomeTestRows {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let number = body["prompt"].as_str().and_then(|p| {
            let last = p.lines().rev().find(|l| l.starts_with("Review: review "))?;
            last["Review: review ".len()..]
                .split(':')
                .next()?
                .parse::<u32>()
                .ok()
        });
        if number.is_some_and(|n| (210..220).contains(&n)) {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"message": "content filtered"}}));
        }
        self.0.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_fails_when_test_examples_stay_unscored() {
    let server = serve(RefusesSomeTestRows(World::new(false))).await;
    let dir = tempfile::tempdir().unwrap();
    let task = setup(dir.path(), &server, None);
    let run = dir.path().join("run");
    let (out, v) = optimize(dir.path(), &task, run.to_str().unwrap()).await;
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    let n = v["test_unscored"]["count"].as_u64().unwrap();
    assert!(n >= 10, "{}", v["test_unscored"]);
    assert!(
        e.contains(&format!("{n} of "))
            && e.contains("test scores")
            && e.contains("unscored")
            && e.contains("content filtered")
            && e.contains("--max-unscored N"),
        "{e}"
    );
    // The run's files were written all the same: the failure is about the evidence.
    assert!(run.join("report.json").is_file() && run.join("best.toml").is_file());
    // Allowed: exit 0.
    let allowed = n.to_string();
    let mut args: Vec<&str> = OPTIMIZE
        .iter()
        .map(|a| if *a == "TASK" { task.as_str() } else { a })
        .collect();
    let run2 = dir.path().join("run2");
    args.extend([
        "--run-dir",
        run2.to_str().unwrap(),
        "--max-unscored",
        &allowed,
    ]);
    let out = metaprompt(dir.path(), &args, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Every call fails with 401, the body and a header echoing the key it was sent.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        ResponseTemplate::new(401)
            .insert_header("x-echo", auth.as_str())
            .set_body_json(json!({"error": {
                "message": format!("Incorrect API key provided: {auth}"),
                "headers": {"Authorization": auth}
            }}))
    }
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn an_echoed_api_key_is_in_no_file_and_no_output() {
    let server = serve(Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let task = setup(dir.path(), &server, Some("MOCK_API_KEY"));
    // Not token-shaped: only knowing the configured key can catch it.
    let canary = "canary-4f1c9e2b7d";
    let env = [("MOCK_API_KEY", canary)];
    let lib = dir.path().join("library.sqlite");
    let lib = lib.to_str().unwrap();
    let run = dir.path().join("run");
    let mut outputs = Vec::new();
    for args in [
        vec!["--library", lib, "eval", &task],
        vec![
            "--library",
            lib,
            "eval",
            &task,
            "--json",
            "--max-unscored",
            "100",
        ],
        vec![
            "--library",
            lib,
            "optimize",
            &task,
            "--yes",
            "--run-dir",
            run.to_str().unwrap(),
        ],
        vec![
            "--library",
            lib,
            "complete",
            "--model",
            "mock:exec",
            "hello",
        ],
    ] {
        let out = metaprompt(dir.path(), &args, &env).await;
        let allowed = args.contains(&"--max-unscored");
        assert_eq!(
            out.status.success(),
            allowed,
            "every call is refused: {args:?}\n{}",
            stderr(&out)
        );
        outputs.push(out);
    }
    for out in &outputs {
        let (o, e) = (stdout(out), stderr(out));
        assert!(!o.contains(canary) && !e.contains(canary), "{o}\n{e}");
    }
    // The refusals were seen and explained (the server's message, with the key masked).
    let e = stderr(&outputs[0]);
    assert!(e.contains("unscored") && e.contains("401"), "{e}");
    let hits = files_containing(dir.path(), canary.as_bytes());
    assert!(hits.is_empty(), "the key is in {hits:?}");
    // Something was written that could have held it.
    assert!(dir.path().join("cache.sqlite").exists());
    assert!(dir.path().join("results").exists() || run.join("calls.jsonl").exists());
}
