//! Helpers shared by the binary's integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Run the binary in `dir` with a clean environment: no stray config, cache in `dir`.
pub async fn metaprompt(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = assert_cmd::Command::cargo_bin("metaprompt").unwrap();
    cmd.current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("METAPROMPT_CACHE", dir.join("cache.sqlite"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Run the binary on the library `dir/lib.db` as author `tester` (no response cache, the
/// shared models directory); its stdout, or a panic with its stderr.
pub async fn cli(dir: &Path, args: &[&str]) -> String {
    let lib = dir.join("lib.db");
    let models = models_dir();
    let out = metaprompt(
        dir,
        args,
        &[
            ("METAPROMPT_LIBRARY", lib.to_str().unwrap()),
            ("METAPROMPT_AUTHOR", "tester"),
            ("METAPROMPT_NO_CACHE", "1"),
            ("METAPROMPT_MODELS_DIR", &models),
        ],
    )
    .await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shipped SST-2 example.
pub fn sst2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sst2")
}

/// A running `metaprompt serve`, killed (SIGKILL) when dropped, so a failing test stops it too.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with(dir, extra, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let log = dir.join(format!("serve-{}.log", rand_suffix()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_metaprompt"))
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().copied())
            .env("HOME", dir)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("METAPROMPT_NO_CACHE", "1")
            .env("METAPROMPT_LIBRARY", dir.join("lib.db"))
            .env("METAPROMPT_MODELS_DIR", models_dir())
            .args(["serve", "--listen", "127.0.0.1:0", "--print-address"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["address"].as_str().map(String::from))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the server did not start: {line}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Server { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait: a graceful stop.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

pub fn models_dir() -> String {
    metaprompt_local::fetch::default_models_dir()
        .to_string_lossy()
        .into_owned()
}

/// The mock execution model: "billing" for anything about invoices, else "other"; optionally
/// slow, so that a kill lands while requests are in flight.
pub struct Exec {
    pub delay: Duration,
}

impl Respond for Exec {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let text = body.to_string();
        // The example's own question: the last one in the prompt (demonstrations come first).
        let last = text.rsplit("Question:").next().unwrap_or_default();
        let answer = if text.ends_with("Instruction:\"}") || text.contains("Instruction:\",") {
            // Asked for an instruction (`generate`'s completion meta-prompt): one, since a
            // label alone is screened out as junk.
            "Route the question to billing or other."
        } else if text.contains("Work it out") {
            // A prompt with worked answers: working that names the other team first, then
            // the answer after the marker.
            if last.contains("invoice") {
                "not other: so far billing\nAnswer: billing"
            } else {
                "not billing: so far other\nAnswer: other"
            }
        } else if text.contains("invoice") || text.contains("charged") {
            "billing"
        } else {
            "other"
        };
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 1});
        let reply = if body.get("messages").is_some() {
            json!({"choices": [{"message": {"role": "assistant", "content": answer},
                "finish_reason": "stop"}], "usage": usage})
        } else {
            json!({"choices": [{"text": answer, "finish_reason": "stop"}], "usage": usage})
        };
        ResponseTemplate::new(200)
            .set_delay(self.delay)
            .set_body_json(reply)
    }
}

pub async fn mock_model(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Exec { delay })
        .mount(&server)
        .await;
    server
}

/// A library with `support` v1 (the mock model, one input) labelled production, and a config
/// pointing at the mock.
pub async fn setup(dir: &Path, mock: &MockServer) {
    std::fs::write(
        dir.join("metaprompt.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\nconcurrency = 256\n\
             [models.\"mock:exec\"]\nformat = \"text\"\n\
             pricing = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n\
             [server]\nmax_body_bytes = 65536\n",
            mock.uri()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("support.toml"),
        "name = \"support\"\ninstruction = \"Route the question to billing, tech or other.\"\n\
         template = \"Question: {{ question }}\\nTeam:\"\ntarget_model = \"mock:exec\"\n",
    )
    .unwrap();
    cli(dir, &["prompts", "add", "support", "support.toml"]).await;
    cli(dir, &["prompts", "label", "support@v1", "production"]).await;
}

pub async fn token(dir: &Path, role: &str) -> String {
    cli(dir, &["tokens", "create", "--role", role, "--name", role])
        .await
        .trim()
        .to_string()
}

/// A routing task on the mock model: questions about invoices are `billing`, others `other`.
pub fn route_task(dir: &Path) -> String {
    let rows = |range: std::ops::Range<usize>| {
        range
            .map(|i| {
                let (q, team) = if i % 3 == 0 {
                    (format!("invoice {i} is wrong"), "billing")
                } else {
                    (format!("login {i} fails"), "other")
                };
                json!({"question": q, "team": team}).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(dir.join("train.jsonl"), rows(100..120)).unwrap();
    std::fs::write(dir.join("dev.jsonl"), rows(0..24)).unwrap();
    std::fs::write(dir.join("test.jsonl"), rows(200..212)).unwrap();
    std::fs::write(
        dir.join("route.toml"),
        "name = \"route\"\ndescription = \"Route the question.\"\ninputs = [\"question\"]\n\
         output = \"team\"\n[prompt]\nname = \"seed\"\ntemplate = \"Question: {{ question }}\\nTeam:\"\n\
         [data]\ntrain = \"train.jsonl\"\ndev = \"dev.jsonl\"\ntest = \"test.jsonl\"\n\
         [[metrics]]\ntype = \"choice\"\nlabels = [\"billing\", \"other\"]\n\
         [models]\nexecution = \"mock:exec\"\nmeta = \"mock:exec\"\nmax_tokens = 4\n",
    )
    .unwrap();
    dir.join("route.toml").to_string_lossy().into_owned()
}

/// The routing task as a task folder in the task root `dir/tasks` (runs over HTTP name tasks
/// there: start the server with `--tasks tasks`); returns the name a request uses.
pub fn route_task_in_root(dir: &Path) -> &'static str {
    let folder = dir.join("tasks/route");
    std::fs::create_dir_all(&folder).unwrap();
    let file = route_task(&folder);
    std::fs::rename(&file, folder.join("task.toml")).unwrap();
    "route"
}

/// The `openai` package in a venv under the target dir (made once, reused).
pub fn openai_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let st = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "python3 -m venv failed (scripts/deps.sh installs python3-venv)"
        );
        let st = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openai",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "pip install openai failed");
    }
    python
}
