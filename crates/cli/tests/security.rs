//! The server as an attacker meets it: a token of each role, a web page in the operator's
//! browser, hostile names and model specs. One test per class of hole (several payloads each),
//! every hostile request checked to change nothing: the library (read back through its own
//! store) and every file outside the server's own directories (the runs directory, its log)
//! are identical after each, no answer is a 5xx, and no answer carries a secret of the
//! server's environment or a line of a file outside the task roots. Then a fuzz of every
//! route with every role: no 5xx, no hang, `/healthz` answering throughout.
//!
//! Other classes have their own files: templates.rs (bounded rendering), connections.rs
//! (header timeouts, connection cap, sign-in redirects), settings.rs (input ranges).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, metaprompt, mock_model, route_task_in_root, setup, stderr, token};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Secrets in the server's environment: one a provider names, one whose shape no redactor
/// knows, one by a credential-sounding name.
const SECRETS: [(&str, &str); 3] = [
    ("CORP_LLM_CRED", "zz9-plural-z-alpha-7781"),
    ("DATABASE_PASSWORD", "hunter2-but-longer"),
    ("WEBHOOK_SIGNING", "whsec-lunchtime-doubly"),
];

/// A line of a file outside the task roots that must never be echoed.
const OUTSIDE_LINE: &str = "TOPSECRET-OUTSIDE-LINE";

/// The server's directory `d`, with the library, a task root, a file outside the roots, and a
/// victim folder outside `d` altogether.
struct World {
    dir: tempfile::TempDir,
    victim: tempfile::TempDir,
    _mock: wiremock::MockServer,
    tokens: BTreeMap<&'static str, String>,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mock = mock_model(Duration::ZERO).await;
        setup(d, &mock).await;
        // The provider key comes from a variable the config names, and a webhook's secret.
        let config = std::fs::read_to_string(d.join("metaprompt.toml")).unwrap();
        let config = config.replace(
            "concurrency = 256\n",
            "concurrency = 256\napi_key_env = \"CORP_LLM_CRED\"\n",
        );
        std::fs::write(d.join("metaprompt.toml"), config).unwrap();
        route_task_in_root(d);
        std::fs::write(
            d.join("outside.toml"),
            format!("name = \"x\"\n{OUTSIDE_LINE} = = =\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("tasks/route/notes.txt"),
            "a file in the task folder\n",
        )
        .unwrap();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("victim.txt"), "untouched\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("outside.toml"), d.join("tasks/route/escape.toml"))
            .unwrap();
        let mut tokens = BTreeMap::new();
        for role in ["viewer", "runner", "editor", "reviewer", "admin"] {
            tokens.insert(role, token(d, role).await);
        }
        World {
            dir,
            victim,
            _mock: mock,
            tokens,
        }
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn start(&self, extra: &[&str]) -> Server {
        let mut args = vec!["--tasks", "tasks"];
        args.extend_from_slice(extra);
        Server::start_with(self.d(), &args, &SECRETS)
    }

    /// Everything a hostile request must not change: the library's contents and every file
    /// outside the server's runs directory and logs (in `d` and in the victim folder).
    async fn snapshot(&self) -> String {
        let mut out = String::new();
        for root in [self.d(), self.victim.path()] {
            let mut files = Vec::new();
            walk(root, &mut files);
            files.sort();
            for f in files {
                let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let own = rel.starts_with("runs")
                    || rel.starts_with("serve-")
                    || rel.starts_with("lib.db")
                    || rel.starts_with("cache");
                if own {
                    continue;
                }
                let bytes = std::fs::read(&f).unwrap_or_default();
                out.push_str(&format!("{rel} {}\n", hex::encode(Sha256::digest(&bytes))));
            }
        }
        let store = metaprompt_registry::open(self.d().join("lib.db"))
            .await
            .unwrap();
        for p in store.prompts().await.unwrap() {
            out.push_str(&format!("{p:?}\n"));
            out.push_str(&format!("{:?}\n", store.versions(&p.name).await.unwrap()));
            out.push_str(&format!("{:?}\n", store.labels(&p.name).await.unwrap()));
            out.push_str(&format!("{:?}\n", store.splits(&p.name).await.unwrap()));
        }
        out.push_str(&format!(
            "events {}\n",
            store.last_event_id().await.unwrap()
        ));
        store.close().await;
        let service = metaprompt_registry::open_service(self.d().join("lib.db"))
            .await
            .unwrap();
        out.push_str(&format!("{:?}\n", service.tokens().await.unwrap()));
        out.push_str(&format!("{:?}\n", service.counts().await.unwrap()));
        service.close().await;
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// One raw HTTP/1.1 exchange (so that `Host`, `Origin` and content types are exactly what a
/// browser or an attacker would send); the status and the body.
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A JSON request with a bearer token.
fn api(s: &Server, token: &str, method: &str, path: &str, body: &Value) -> (u16, String) {
    let auth = format!("Bearer {token}");
    raw(
        &s.addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body.to_string(),
    )
}

/// The answer is a refusal (4xx), carries no secret and no outside line.
fn refused(what: &str, (status, body): &(u16, String)) {
    assert!((400..500).contains(status), "{what}: {status} {body}");
    clean(what, body);
}

fn clean(what: &str, body: &str) {
    for (_, secret) in SECRETS {
        assert!(!body.contains(secret), "{what}: a secret in {body}");
    }
    assert!(
        !body.contains(OUTSIDE_LINE),
        "{what}: an outside file's line in {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_path_or_model_file_comes_from_a_client() {
    let w = World::new().await;
    let s = w.start(&[]);
    let before = w.snapshot().await;
    let d = w.d().to_string_lossy().into_owned();
    let victim = w
        .victim
        .path()
        .join("victim.txt")
        .to_string_lossy()
        .into_owned();
    let lib = format!("{d}/lib.db");
    let outside = format!("{d}/outside.toml");
    let task_file = format!("{d}/tasks/route/task.toml");
    let eval = |request: Value| json!({"kind": "eval", "request": request});
    let optimize = |request: Value| json!({"kind": "optimize", "request": request});
    let scope = |task: &str| json!({"task": task, "limit": 2});
    let mut hostile: Vec<(&str, Value)> = Vec::new();
    // Tasks by path, in every spelling.
    for task in [
        task_file.as_str(),
        outside.as_str(),
        "/proc/self/environ",
        "../tasks/route",
        "route/../../outside.toml",
        "route/task.toml",
        "tasks/route/task.toml",
        "./route",
        "route\u{0}",
        "",
        "..",
        "nosuch",
    ] {
        hostile.push(("eval task", eval(json!({"scope": scope(task)}))));
        hostile.push(("optimize task", optimize(json!({"task": task}))));
    }
    // Outputs anywhere.
    for out in [
        lib.as_str(),
        victim.as_str(),
        "../../lib.db",
        "results.jsonl",
        "/tmp/x/y",
    ] {
        hostile.push((
            "eval out",
            eval(json!({"scope": scope("route"), "out": out})),
        ));
        hostile.push((
            "optimize run_dir",
            optimize(json!({"task": "route", "run_dir": out})),
        ));
    }
    // Prompts outside the task's folder.
    for prompt in [
        "/proc/self/environ",
        outside.as_str(),
        "../../outside.toml",
        "escape.toml",
        "../route/../../lib.db",
        "prompt:../../x",
        "prompt:support@nolabel",
        "prompt:",
    ] {
        hostile.push((
            "eval prompt",
            eval(json!({"scope": scope("route"), "prompt": prompt})),
        ));
        hostile.push((
            "optimize prompt",
            optimize(json!({"task": "route", "prompt": prompt})),
        ));
    }
    // Meta-prompt templates from anywhere, a library name that is a path.
    for dir in ["/etc", d.as_str(), "."] {
        hostile.push((
            "templates",
            optimize(json!({"task": "route", "meta": {"templates": dir}})),
        ));
    }
    for name in ["../../x", "/abs", "a/b", ".hidden", ""] {
        hostile.push(("name", optimize(json!({"task": "route", "name": name}))));
    }
    // Model files.
    for model in [
        "local:/proc/self/environ",
        "local:/nonexistent/model.gguf",
        "local:../lib.db",
        "local:outside.toml",
    ] {
        hostile.push((
            "eval model",
            eval(json!({"scope": {"task": "route", "model": model}})),
        ));
        hostile.push((
            "optimize model",
            optimize(json!({"task": "route", "model": model})),
        ));
        hostile.push((
            "meta model",
            optimize(json!({"task": "route", "meta": {"meta": model}})),
        ));
        hostile.push((
            "judge",
            optimize(json!({"task": "route", "meta": {"judge": model}})),
        ));
    }
    for role in ["editor", "admin"] {
        let t = &w.tokens[role];
        for (what, body) in &hostile {
            let answer = api(&s, t, "POST", "/v1/runs", body);
            refused(&format!("{role} {what} {body}"), &answer);
            assert_eq!(
                w.snapshot().await,
                before,
                "{role} {what} {body} changed something"
            );
        }
    }
    // A model file is refused the same way whether it exists or not (nothing is revealed).
    let runner = &w.tokens["runner"];
    let mut answers = Vec::new();
    for model in ["local:/etc/passwd", "local:/nonexistent.gguf"] {
        let run = api(
            &s,
            runner,
            "POST",
            "/v1/prompts/support/run",
            &json!({"inputs": {"question": "x"}, "model": model}),
        );
        refused(model, &run);
        let chat = api(
            &s,
            runner,
            "POST",
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        );
        refused(model, &chat);
        answers.push((run.0, chat.0));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], (400, 400));
    // The known tasks are listed by name, and a legitimate run writes only under runs/<id>/.
    let (st, body) = api(&s, &w.tokens["viewer"], "GET", "/v1/tasks", &json!({}));
    assert_eq!(st, 200, "{body}");
    let tasks: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tasks["tasks"][0]["name"], "route", "{tasks:#}");
    let (st, body) = api(
        &s,
        &w.tokens["editor"],
        "POST",
        "/v1/runs",
        &eval(json!({"scope": scope("route"), "prompt": "prompt:support@production"})),
    );
    assert_eq!(st, 202, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        let (_, body) = api(
            &s,
            &w.tokens["viewer"],
            "GET",
            &format!("/v1/runs/{id}"),
            &json!({}),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["status"] != "running" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["status"], "finished", "{record:#}");
    assert!(w.d().join(format!("runs/{id}/results.jsonl")).is_file());
    assert_eq!(
        w.snapshot().await,
        before,
        "the legitimate run wrote outside runs/"
    );
    // Every run record a viewer can read is clean.
    let (_, list) = api(&s, &w.tokens["viewer"], "GET", "/v1/runs", &json!({}));
    clean("runs list", &list);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_never_carry_secrets_or_file_lines() {
    let w = World::new().await;
    // A task in the root whose file does not parse, quoting a line with a secret's value.
    let bad = w.d().join("tasks/broken");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("task.toml"),
        format!("name = \"broken\"\nkey = {} {OUTSIDE_LINE}\n", SECRETS[0].1),
    )
    .unwrap();
    let s = w.start(&[]);
    let editor = &w.tokens["editor"];
    for request in [
        json!({"kind": "eval", "request": {"scope": {"task": "broken"}}}),
        json!({"kind": "optimize", "request": {"task": "broken"}}),
    ] {
        let answer = api(&s, editor, "POST", "/v1/runs", &request);
        refused("broken task", &answer);
        assert!(
            answer.1.contains("task.toml"),
            "the error names the file: {}",
            answer.1
        );
    }
    let (_, tasks) = api(&s, &w.tokens["viewer"], "GET", "/v1/tasks", &json!({}));
    clean("tasks", &tasks);
    // A provider that echoes what it was sent (its key included) in an error.
    let (status, body) = api(
        &s,
        &w.tokens["runner"],
        "POST",
        "/v1/prompts/support/run",
        &json!({"inputs": {"question": SECRETS[1].1}, "model": "nosuch:model"}),
    );
    assert!(status < 500, "{status} {body}");
    clean("echo", &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_in_the_operators_browser_reaches_nothing() {
    let w = World::new().await;
    for extra in [&[][..], &["--insecure-local"][..]] {
        let s = w.start(extra);
        let before = w.snapshot().await;
        let admin = format!("Bearer {}", w.tokens["admin"]);
        let own = format!("http://{}", s.addr);
        // What a page can send without a preflight: text/plain, forms, multipart; and JSON
        // with a foreign Origin or Sec-Fetch-Site (a preflighted fetch never gets that far,
        // but a server must not rely on the browser alone).
        let writes: [(&str, &str, &str); 7] = [
            (
                "POST",
                "/v1/prompts/support/versions",
                r#"{"file": {"template": "x"}}"#,
            ),
            (
                "PUT",
                "/v1/prompts/support/labels/staging",
                r#"{"version": "v1"}"#,
            ),
            ("POST", "/v1/tokens", r#"{"name": "evil", "role": "admin"}"#),
            (
                "POST",
                "/v1/runs",
                r#"{"kind": "eval", "request": {"scope": {"task": "route"}}}"#,
            ),
            ("POST", "/v1/agent/pass", ""),
            ("DELETE", "/v1/tokens/admin", ""),
            (
                "POST",
                "/v1/prompts/support/versions/v1/review",
                r#"{"decision": "approve"}"#,
            ),
        ];
        for (method, path, body) in writes {
            let mut attempts: Vec<Vec<(&str, &str)>> = vec![
                vec![("Content-Type", "text/plain")],
                vec![("Content-Type", "application/x-www-form-urlencoded")],
                vec![("Content-Type", "multipart/form-data; boundary=x")],
                vec![
                    ("Content-Type", "text/plain"),
                    ("Origin", "http://evil.example"),
                ],
                vec![
                    ("Content-Type", "application/json"),
                    ("Origin", "http://evil.example"),
                ],
                vec![("Content-Type", "application/json"), ("Origin", "null")],
                vec![
                    ("Content-Type", "application/json"),
                    ("Origin", &own),
                    ("Sec-Fetch-Site", "cross-site"),
                ],
                vec![
                    ("Content-Type", "application/json"),
                    ("Sec-Fetch-Site", "same-site"),
                ],
                vec![
                    ("Content-Type", "application/json"),
                    ("Host", "rebind.evil.example"),
                ],
                vec![
                    ("Content-Type", "application/json"),
                    ("Host", "rebind.evil.example"),
                    ("Origin", "http://rebind.evil.example"),
                ],
            ];
            if body.is_empty() {
                // Requests without a body need no content type: Origin and Host still hold.
                attempts.retain(|h| h.iter().any(|(k, _)| *k != "Content-Type"));
            }
            for mut headers in attempts {
                headers.push(("Authorization", &admin));
                let answer = raw(&s.addr, method, path, &headers, body);
                refused(&format!("{extra:?} {method} {path} {headers:?}"), &answer);
                assert_eq!(
                    w.snapshot().await,
                    before,
                    "{extra:?} {method} {path} {headers:?} changed something"
                );
            }
        }
        // DNS rebinding cannot read answers either.
        for path in ["/v1/prompts", "/v1/tokens", "/", "/v1/runs"] {
            let answer = raw(
                &s.addr,
                "GET",
                path,
                &[
                    ("Host", "rebind.evil.example:8080"),
                    ("Authorization", &admin),
                ],
                "",
            );
            assert_eq!(answer.0, 421, "{path}: {answer:?}");
        }
        // The server's own pages and programs still work: same origin, localhost, no Origin.
        let ok = raw(
            &s.addr,
            "PUT",
            "/v1/prompts/support/labels/staging",
            &[
                ("Content-Type", "application/json"),
                ("Origin", &own),
                ("Sec-Fetch-Site", "same-origin"),
                ("Authorization", &admin),
            ],
            r#"{"version": "v1"}"#,
        );
        assert_eq!(ok.0, 200, "{ok:?}");
        let port = s.addr.rsplit_once(':').unwrap().1;
        let host = format!("localhost:{port}");
        let ok = raw(
            &s.addr,
            "GET",
            "/v1/prompts",
            &[("Host", &host), ("Authorization", &admin)],
            "",
        );
        assert_eq!(ok.0, 200, "{ok:?}");
    }
    // A name the operator lists is answered.
    let s = w.start(&["--host", "prompts.example.com"]);
    let admin = format!("Bearer {}", w.tokens["admin"]);
    let ok = raw(
        &s.addr,
        "GET",
        "/v1/prompts",
        &[("Host", "Prompts.Example.com"), ("Authorization", &admin)],
        "",
    );
    assert_eq!(ok.0, 200, "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_name_that_is_a_path_is_refused_before_anything_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let task = common::route_task(d);
    let text = std::fs::read_to_string(&task).unwrap();
    for name in ["../../x", "/tmp/abs", "a/b", ".hidden", "a b", ""] {
        let t = text.replace("name = \"route\"", &format!("name = {name:?}"));
        std::fs::write(&task, t).unwrap();
        for args in [
            vec!["optimize", task.as_str(), "--algo", "fewshot"],
            vec!["eval", task.as_str()],
            vec!["optimize", task.as_str(), "--name", "../../y"],
        ] {
            let out = metaprompt(
                d,
                &args,
                &[
                    ("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap()),
                    ("METAPROMPT_NO_CACHE", "1"),
                ],
            )
            .await;
            assert!(!out.status.success(), "{name:?} {args:?}");
            let err = stderr(&out);
            assert!(err.contains("name"), "{name:?}: {err}");
        }
    }
    assert!(
        mock.received_requests().await.unwrap().is_empty(),
        "a call was made"
    );
    assert!(!d.join("runs").exists() && !d.parent().unwrap().join("x").exists());
    // A valid task name with an invalid library name is refused before any call too.
    std::fs::write(&task, text).unwrap();
    let out = metaprompt(
        d,
        &["optimize", &task, "--algo", "fewshot", "--name", "../../y"],
        &[
            ("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap()),
            ("METAPROMPT_NO_CACHE", "1"),
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        mock.received_requests().await.unwrap().is_empty(),
        "a call was made"
    );
}

/// A small deterministic generator (no dependency for a test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn word<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_route_with_every_role_gets_no_5xx_and_no_hang() {
    let w = World::new().await;
    let s = w.start(&[]);
    let routes: &[(&str, &str)] = &[
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/prompts"),
        ("GET", "/v1/prompts/{name}"),
        ("POST", "/v1/prompts/{name}/render"),
        ("POST", "/v1/prompts/{name}/run"),
        ("GET", "/v1/prompts/{name}/versions"),
        ("POST", "/v1/prompts/{name}/versions"),
        ("GET", "/v1/prompts/{name}/versions/{version}"),
        ("POST", "/v1/prompts/{name}/versions/{version}/review"),
        ("GET", "/v1/prompts/{name}/labels"),
        ("PUT", "/v1/prompts/{name}/labels/{label}"),
        ("POST", "/v1/prompts/{name}/labels/{label}/rollback"),
        ("PUT", "/v1/prompts/{name}/labels/{label}/split"),
        ("DELETE", "/v1/prompts/{name}/labels/{label}/split"),
        ("GET", "/v1/prompts/{name}/diff?from=v1&to={version}"),
        ("GET", "/v1/prompts/{name}/events"),
        ("GET", "/v1/prompts/{name}/runs"),
        ("GET", "/v1/library/runs/{id}"),
        ("GET", "/v1/review"),
        ("POST", "/v1/feedback"),
        ("POST", "/v1/feedback:batch"),
        ("GET", "/v1/inferences/{id}"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/runs"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs/{id}"),
        ("DELETE", "/v1/runs/{id}"),
        ("POST", "/v1/runs/{id}/resume"),
        ("GET", "/v1/webhooks/deliveries"),
        ("GET", "/v1/agent"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tokens"),
        ("POST", "/v1/tokens"),
        ("DELETE", "/v1/tokens/{name}"),
        ("GET", "/"),
        ("GET", "/login?next={name}"),
        ("GET", "/prompts/{name}"),
        ("GET", "/prompts/{name}/diff?from=v1&to={version}"),
        ("GET", "/review"),
        ("GET", "/review/{name}/{version}"),
        ("GET", "/runs"),
        ("GET", "/runs/{id}"),
        ("GET", "/runs/{id}/live"),
        ("GET", "/production"),
        ("GET", "/agent?prompt={name}"),
        ("GET", "/agent/live?prompt={name}"),
        ("PATCH", "/v1/prompts"),
        ("GET", "/nothing/{name}"),
    ];
    let names = [
        "support",
        "nosuch",
        "..",
        "%2e%2e%2f",
        "a%00b",
        "x".repeat(300).leak() as &str,
        "%F0%9F%92%A9",
    ];
    let versions = ["v1", "v0", "v99999999999999999999", "-1", "abc", "%20"];
    let labels = ["production", "staging", "v1", "UPPER", "%0d%0a", "a-b_c"];
    let ids = ["run_x", "inf_x", "../../lib", "", "%ff"];
    let bodies: Vec<String> = vec![
        String::new(),
        "{}".into(),
        "null".into(),
        "[]".into(),
        "{\"inputs\": {\"question\": \"invoice?\"}}".into(),
        "{\"inputs\": {\"question\": 1e999}}".into(),
        "{\"version\": \"v1\"}".into(),
        "{\"weights\": {\"v1\": 50}}".into(),
        "{\"decision\": \"approve\", \"comment\": \"\\u0000\"}".into(),
        "{\"inference_id\": \"inf_x\", \"score\": 2}".into(),
        "{\"items\": [{\"inference_id\": \"inf_x\", \"score\": 0.5}]}".into(),
        "{\"model\": \"prompt:support\", \"messages\": [{\"role\": \"user\", \"content\": \"invoice\"}]}".into(),
        "{\"model\": \"mock:exec\", \"prompt\": \"x\", \"max_tokens\": 4294967296}".into(),
        "{\"kind\": \"eval\", \"request\": {\"scope\": {\"task\": \"route\", \"limit\": 1}}}".into(),
        "{\"kind\": \"optimize\", \"request\": {\"task\": \"route\", \"rounds\": 1, \"dev_limit\": 2, \"test_limit\": 0, \"budget\": {\"max_metric_calls\": 4}}}".into(),
        "{\"name\": \"fz\", \"role\": \"viewer\"}".into(),
        "{\"file\": {\"template\": \"{{ question }}\"}}".into(),
        "{\"file\": {\"template\": \"{% for a in range(99) %}{% for b in range(99) %}{% for c in range(99) %}x{% endfor %}{% endfor %}{% endfor %}\"}}".into(),
        "[".repeat(10_000),
        "{\"a\":".repeat(2_000),
        "\u{feff}{}".into(),
        "\u{0}\u{1}\u{2}".into(),
        format!("{{\"inputs\": {{\"question\": \"{}\"}}}}", "y".repeat(70_000)),
    ];
    let roles = [
        "viewer", "runner", "editor", "reviewer", "admin", "none", "bogus",
    ];
    let kinds = [
        "application/json",
        "text/plain",
        "",
        "application/json; charset=utf-8",
    ];
    let mut rng = Rng(0x5EED_F00D);
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let requests = 1500;
    for i in 0..requests {
        let (method, template) = *rng.pick(routes);
        let method = if rng.below(10) == 0 {
            *rng.pick(&["GET", "POST", "PUT", "DELETE", "PATCH"])
        } else {
            method
        };
        let path = template
            .replace("{name}", rng.word(&names))
            .replace("{version}", rng.word(&versions))
            .replace("{label}", rng.word(&labels))
            .replace("{id}", rng.word(&ids));
        let body = if method == "GET" {
            ""
        } else {
            rng.pick(&bodies).as_str()
        };
        let role = *rng.pick(&roles);
        let auth = match role {
            "none" => String::new(),
            "bogus" => "Bearer mp_bogus".into(),
            r => format!("Bearer {}", w.tokens[r]),
        };
        let kind = *rng.pick(&kinds);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if !auth.is_empty() {
            headers.push(("Authorization", &auth));
        }
        if !kind.is_empty() {
            headers.push(("Content-Type", kind));
        }
        let addr = s.addr.clone();
        let (m, p, b) = (method.to_string(), path.clone(), body.to_string());
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let answer = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || {
                let h: Vec<(&str, &str)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                raw(&addr, &m, &p, &h, &b)
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung: {method} {path} as {role}"))
        .unwrap();
        assert!(
            answer.0 < 500,
            "request {i}: {method} {path} as {role} ({kind}) body {:.200}: {} {:.500}",
            body,
            answer.0,
            answer.1
        );
        clean(&format!("{method} {path}"), &answer.1);
        *statuses.entry(answer.0).or_default() += 1;
        if i % 25 == 0 {
            let addr = s.addr.clone();
            let t = Instant::now();
            let health =
                tokio::task::spawn_blocking(move || raw(&addr, "GET", "/healthz", &[], ""))
                    .await
                    .unwrap();
            assert_eq!(health.0, 200);
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "health took {:?}",
                t.elapsed()
            );
        }
    }
    eprintln!(
        "fuzz: {requests} requests in {:.1} s; statuses {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        statuses.keys().any(|s| *s < 300),
        "nothing succeeded: {statuses:?}"
    );
    assert!(
        statuses.keys().any(|s| *s >= 400),
        "nothing was refused: {statuses:?}"
    );
}
