//! The web console in a real browser: Debian's `chromium`, driven through `chromedriver`
//! (WebDriver, from Rust with fantoccini), against the real `metaprompt serve` on a loopback
//! port with a real library file. The execution model is the loopback mock of the service
//! tests: the console is what is under test.
//!
//! `scripts/deps.sh` installs chromium and chromium-driver; without them this test fails and
//! says so. Screenshots of every page land in `target/console-screenshots/` (not committed).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, cli, mock_model, route_task_in_root, setup, token};
use fantoccini::{Client, ClientBuilder, Locator};
use metaprompt_registry::model::{Batch, Evidence, NewVersion, Origin, ReviewState};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// chromedriver on a free loopback port, in its own process group: dropping it kills the
/// group (the browsers it started too), also when the test fails.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // killpg(2), not kill(1): procps-ng 4.0's `kill -KILL -PGID` signalled every process
        // here, the test runner's included.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .chain([
                PathBuf::from("/usr/bin"),
                PathBuf::from("/usr/lib/chromium"),
            ])
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn chromedriver(dir: &Path) -> Driver {
    use std::os::unix::process::CommandExt;
    let bin = find_program(&["chromedriver"]).unwrap_or_else(|| {
        panic!("chromedriver is missing: run scripts/deps.sh (Debian packages chromium, chromium-driver)")
    });
    let port = free_port();
    let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && r.json::<Value>()
                .await
                .is_ok_and(|v| v["value"]["ready"] == true)
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "chromedriver did not become ready: {}",
        std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
    );
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = find_program(&["chromium", "chromium-browser"])
        .unwrap_or_else(|| panic!("chromium is missing: run scripts/deps.sh"));
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`, read in one script (a live page replaces
/// elements under a find-then-read).
async fn text(c: &Client, css: &str) -> String {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )
        .await
        .unwrap();
    match v.as_str() {
        Some(t) => t.to_string(),
        None => panic!("no element {css} on {}", c.current_url().await.unwrap()),
    }
}

async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

async fn type_into(c: &Client, at: Locator<'_>, keys: &str) {
    c.find(at).await.unwrap().send_keys(keys).await.unwrap();
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Wait until `script` returns true (at most `secs`).
async fn until(c: &Client, script: &str, secs: u64) {
    for _ in 0..secs * 10 {
        if js(c, script).await == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "never true: {script}\n{}",
        c.source().await.unwrap_or_default()
    );
}

async fn sign_in(c: &Client, s: &Server, next: &str, token: &str) {
    c.goto(&s.url(next)).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path() == "/login",
        "not sent to sign in"
    );
    type_into(c, Locator::Id("token"), token).await;
    click(c, Locator::Css("form.login button")).await;
    until(
        c,
        &format!(
            "return location.pathname === '{}'",
            next.split('?').next().unwrap()
        ),
        10,
    )
    .await;
}

fn evidence(split: &str, mean: f64, diff: Option<f64>, cost: f64) -> Evidence {
    Evidence {
        task: "route".into(),
        split: split.into(),
        model: "mock:exec".into(),
        metric: "choice".into(),
        n: 60,
        mean,
        low: mean - 0.1,
        high: (mean + 0.1).min(1.0),
        baseline: None,
        diff,
        diff_low: diff.map(|d| d - 0.08),
        diff_high: diff.map(|d| d + 0.08),
        p_value: diff.map(|_| 0.004),
        cost_per_execution_usd: Some(cost),
        run: None,
        recorded_at: None,
    }
}

/// `support` v1 (production), v2 and v3 proposed by the optimizer with evidence, and `xss`
/// whose instruction is a script.
async fn seed_library(d: &Path) {
    let store = metaprompt_registry::open(d.join("lib.db")).await.unwrap();
    let v1 = store.versions("support").await.unwrap()[0].hash.clone();
    let mut batch = Batch::default();
    for (k, text) in [
        "Route the question to billing, tech or other.\nInvoices, charges and refunds are billing.",
        "Route the question to billing, tech or other. Answer with one word.",
    ]
    .iter()
    .enumerate()
    {
        let mut file = metaprompt_eval::prompt::PromptFile::from_template(
            "support",
            "Question: {{ question }}\nTeam:",
        );
        file.instruction = Some((*text).to_string());
        file.target_model = Some("mock:exec".into());
        let mut v = NewVersion::new("support", file, Origin::Optimize, "optimizer");
        v.parents = vec![v1.clone()];
        v.message = Some(format!("optimizer proposal {}", k + 1));
        let mut e = evidence("test", 0.81 + k as f64 * 0.01, Some(0.12), 0.000_021);
        e.baseline = Some(v1.clone());
        batch
            .versions
            .push((v, vec![e, evidence("dev", 0.8, None, 0.000_021)]));
    }
    let added = store.commit(batch).await.unwrap();
    // The agent filed v3: its case carries the diagnosis and the held-out checks.
    let v3 = &added[1].version;
    let now = chrono::Utc::now();
    let case: metaprompt_agent::Case = serde_json::from_value(json!({
        "id": "case_billing", "prompt": "support",
        "slice": {"kind": "tag", "key": "topic", "value": "billing"},
        "state": "proposed", "opened_at": now, "updated_at": now, "label": "production",
        "incumbent": {"hash": v1, "seq": 1},
        "finding": {"prompt": "support", "slice": {"kind": "tag", "key": "topic", "value": "billing"},
                    "against": "rest", "n": 50, "mean": 0.18, "reference_n": 50,
                    "reference_mean": 1.0, "p": 1e-40, "q": 2e-40},
        "seen": 1,
        "diagnosis": {"summary": "41 of 50 billing questions failed; answered other ×41",
                      "hypothesis": "The instruction never says that invoices are billing.",
                      "model": "mock:exec"},
        "proposal": {"version": {"hash": v3.hash, "seq": v3.seq}, "algorithm": "fewshot",
                     "run_dir": "agent/case_billing/run",
                     "checks": [{"slice": "topic=billing", "n": 19, "before": 0.105, "after": 0.421,
                                 "diff": 0.316, "low": 0.105, "high": 0.526, "p": 0.001}],
                     "cost_per_execution_usd": 0.000021},
    }))
    .unwrap();
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    service.save_case(&case.to_row().unwrap()).await.unwrap();
    // A second case on all of `support`'s traffic waits for the first, and says so.
    let waiting: metaprompt_agent::Case = serde_json::from_value(json!({
        "id": "case_all", "prompt": "support", "slice": {"kind": "all"},
        "state": "open", "opened_at": now, "updated_at": now, "label": "production",
        "incumbent": {"hash": v1, "seq": 1},
        "finding": {"prompt": "support", "slice": {"kind": "all"}, "against": "baseline",
                    "n": 100, "mean": 0.6, "reference_n": 100, "reference_mean": 0.8,
                    "p": 1e-4, "q": 2e-4},
        "seen": 2,
        "spent": [{"at": now, "calls": 12, "usd": 0.0042}],
        "search": {"run_dir": "agent/support.all.20260101T000000000/runs/run-20260101-000000-0a1b2c3d4e5f",
                   "algorithm": "gepa", "started_at": now, "stopped_at": now},
        "waiting": "waiting: case case_billing of this prompt is proposed",
    }))
    .unwrap();
    service.save_case(&waiting.to_row().unwrap()).await.unwrap();
    service.close().await;
    let mut xss = metaprompt_eval::prompt::PromptFile::from_template("xss", "Q: {{ q }}\nA:");
    xss.instruction = Some("<script>alert(1)</script>".into());
    xss.description = Some("<img src=x onerror=alert(2)>".into());
    store
        .add(NewVersion::new("xss", xss, Origin::Human, "mallory"))
        .await
        .unwrap();
    store.close().await;
}

/// `n` runs of `support@production` tagged by topic, each scored: billing fails on v1.
async fn traffic(http: &reqwest::Client, s: &Server, runner: &str, n: usize) {
    for i in 0..n {
        let billing = i % 2 == 0;
        let q = if billing {
            format!("invoice {i} charged twice")
        } else {
            format!("login {i} fails")
        };
        let r: Value = http
            .post(s.url("/v1/prompts/support/run"))
            .bearer_auth(runner)
            .json(&json!({"inputs": {"question": q}, "tags": {"topic": if billing { "billing" } else { "login" }},
                          "split_key": format!("user-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["inference_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r:#}"));
        let score = if billing {
            r["version"] == "v2" && i % 4 == 0
        } else {
            true
        };
        let st = http
            .post(s.url("/v1/feedback"))
            .bearer_auth(runner)
            .json(&json!({"inference_id": id, "score": score}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(st.is_success(), "{st}");
    }
}

/// Candidates evaluated and rejected in a line that counts them (`3 candidates, 1 rejected`,
/// `1 candidate, 0 rejected`), as the CLI's `optimize` summary and the console both write them.
fn counts(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.starts_with("candidate"))
        .unwrap_or_else(|| panic!("no candidate count in {line:?}"));
    let n = words[at - 1].parse().unwrap();
    let r = words[at + 1..]
        .windows(2)
        .find(|w| w[1].starts_with("rejected"))
        .map(|w| w[0].parse().unwrap())
        .unwrap_or_else(|| panic!("no rejected count in {line:?}"));
    (n, r)
}

/// The console's numbers are the CLI's: a CLI optimization's candidates on its prompt's page
/// equal its summary; the HTTP run `id` (the same task) on the runs page, its own page and its
/// prompt's page equal what its result holds (the summary's pool and rejected); runs are named
/// by their task's name and linked; a free model's cost is not `$0` beside `unpriced`; the
/// stop reason is a sentence; evidence rows are not repeated; the diff page fits 1280 px.
async fn console_agrees_with_the_cli(
    c: &Client,
    s: &Server,
    http: &reqwest::Client,
    editor: &str,
    d: &Path,
    id: &str,
) {
    let out = cli(
        d,
        &[
            "optimize",
            "tasks/route/task.toml",
            "--algo",
            "fewshot",
            "--rounds",
            "2",
            "--minibatch",
            "6",
            "--demos",
            "2",
            "--name",
            "route",
        ],
    )
    .await;
    let summary = out
        .lines()
        .find(|l| l.starts_with("calls ") && l.contains("candidate"))
        .unwrap_or_else(|| panic!("{out}"));
    let cli_counts = counts(summary);
    // The HTTP run's own counts, as the CLI's summary takes them from the outcome.
    let run: Value = http
        .get(s.url(&format!("/v1/runs/{id}")))
        .bearer_auth(editor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let o = &run["result"]["outcome"];
    let http_counts = (
        o["pool"].as_array().unwrap().len() as u64,
        o["rejected"].as_array().unwrap().len() as u64,
    );

    // The runs page: the task's name (not `task`), the counts, the id a link to its page.
    c.goto(&s.url("/runs")).await.unwrap();
    let row = js(c, &format!(
        "const a = document.querySelector('table.runs a[href=\"/runs/{id}\"]'); return a ? a.closest('tr').innerText : null"
    )).await;
    let row = row
        .as_str()
        .unwrap_or_else(|| panic!("no link to /runs/{id}"));
    assert!(
        row.contains("route · fewshot") && !row.contains("task ·"),
        "{row}"
    );
    let cell = js(c, &format!(
        "return document.querySelector('table.runs a[href=\"/runs/{id}\"]').closest('tr').querySelector('td.candidates').innerText"
    )).await;
    assert_eq!(counts(cell.as_str().unwrap()), http_counts, "{row}");

    // The run's page: the same counts, a readable stop reason, one cost wording.
    c.goto(&s.url(&format!("/runs/{id}"))).await.unwrap();
    assert_eq!(
        counts(&text(c, "section.result p.counts").await),
        http_counts
    );
    let stop = text(c, "section.result td.stop").await;
    assert!(
        stop.contains(' ') && !stop.contains('"'),
        "not a sentence: {stop}"
    );
    let usage = text(c, "table.usage").await;
    assert!(
        !(usage.contains("$0\t") && usage.contains("unpriced")),
        "{usage}"
    );
    assert!(!text(c, "#live").await.contains("1 rounds"));

    // The prompt's page: each run's counts, the CLI's run by its summary's numbers, the HTTP
    // run linked to its page; run ids of versions are links; no evidence row twice.
    c.goto(&s.url("/prompts/route")).await.unwrap();
    shot(c, "prompt-runs").await;
    // A version an optimization stored says how it runs: its task's settings.
    let settings = text(c, "dd.run-settings").await;
    assert!(
        settings.contains("max_tokens 4") && settings.contains("a choice among billing, other"),
        "{settings}"
    );
    let rows = js(
        c,
        "return [...document.querySelectorAll('#runs-h ~ div table tbody tr')].map(r => \
         [r.id, (r.querySelector('td a') || {}).getAttribute ? r.querySelector('td a').getAttribute('href') : null, \
          r.querySelector('td.candidates').innerText])",
    )
    .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let linked: Vec<&Value> = rows
        .iter()
        .filter(|r| r[1] == json!(format!("/runs/{id}")))
        .collect();
    assert_eq!(linked.len(), 1, "the HTTP run links to its page: {rows:?}");
    assert_eq!(counts(linked[0][2].as_str().unwrap()), http_counts);
    let own: Vec<&Value> = rows.iter().filter(|r| r[1].is_null()).collect();
    assert_eq!(own.len(), 1, "{rows:?}");
    assert_eq!(counts(own[0][2].as_str().unwrap()), cli_counts, "{summary}");
    assert!(own[0][0].as_str().unwrap().starts_with("run-"), "{rows:?}");
    let hrefs = js(
        c,
        "return [...document.querySelectorAll('p.meta a.run')].map(a => a.getAttribute('href'))",
    )
    .await;
    let hrefs = hrefs.as_array().unwrap();
    // (Only a kept candidate's version names its run: none may have won here.)
    for h in hrefs {
        let h = h.as_str().unwrap();
        if let Some(anchor) = h.strip_prefix('#') {
            assert_eq!(
                js(c, &format!("return !!document.getElementById({anchor:?})")).await,
                json!(true),
                "{h}"
            );
        } else {
            assert_eq!(h, format!("/runs/{id}"));
        }
    }
    let dup = js(
        c,
        "return [...document.querySelectorAll('table.evidence')].some(t => { \
           const rows = [...t.querySelectorAll('tbody tr')].map(r => r.innerText); \
           return new Set(rows).size !== rows.length; })",
    )
    .await;
    assert_eq!(dup, json!(false), "an evidence row is repeated");
    let page = text(c, "main").await;
    assert!(!page.contains("$0 per execution"), "{page}");

    // The diff page at 1280 px: nothing wider than the window.
    c.set_window_size(1280, 1000).await.unwrap();
    for path in [
        "/prompts/route/diff",
        "/prompts/support/diff?from=v1&to=v3&view=split",
        "/prompts/route",
        "/runs",
    ] {
        c.goto(&s.url(path)).await.unwrap();
        assert_eq!(
            js(
                c,
                "return document.documentElement.scrollWidth <= window.innerWidth"
            )
            .await,
            json!(true),
            "{path} overflows at 1280 px"
        );
    }
    shot(c, "diff-1280").await;
}

/// A form post the way another page (or a viewer) would forge it; no redirects followed.
async fn post_form(
    url: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let enc = |v: &str| {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    let mut r = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if let Some(t) = cookie {
        r = r.header("cookie", format!("metaprompt_token={t}"));
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (st, location.unwrap_or(resp.text().await.unwrap()))
}

/// The agent's page: reached from a proposal's diagnosis, it lists the seeded cases with their
/// state and exact waiting reason, the slices too small to test as `GET /v1/agent` has them,
/// links to the diagnosis and the proposal that reach them, fits 1280 px; a pass asked for
/// over the API shows as the last pass there and as `pass` in `GET /v1/agent`.
async fn agent_page(c: &Client, s: &Server, http: &reqwest::Client, editor: &str) {
    c.set_window_size(1280, 1000).await.unwrap();
    c.goto(&s.url("/review/support/v3")).await.unwrap();
    click(c, Locator::Css("section.diagnosis a.case")).await;
    until(
        c,
        "return location.pathname === '/agent' && location.hash === '#case-case_billing'",
        10,
    )
    .await;
    assert_eq!(
        text(c, "header.top nav a[aria-current=page]").await,
        "Agent"
    );
    assert_eq!(text(c, "#cases-h + p").await, "2 cases, 2 live");
    let billing = text(c, "#case-case_billing").await;
    for want in [
        "proposed",
        "in the review queue",
        "topic=billing",
        "a reviewer's decision",
        "support@v3",
        "agent/case_billing/run",
        "no calls",
    ] {
        assert!(billing.contains(want), "{want}: {billing}");
    }
    let all = text(c, "#case-case_all").await;
    for want in [
        "open",
        "no proposal yet",
        "all traffic",
        "waiting: case case_billing of this prompt is proposed",
        "12 calls · $0.0042",
        "gepa search since",
        "the next pass resumes it",
        "run-20260101-000000-0a1b2c3d4e5f",
    ] {
        assert!(all.contains(want), "{want}: {all}");
    }
    // The untested slices are the API's.
    let api: Value = http
        .get(s.url("/v1/agent"))
        .bearer_auth(editor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let untested = api["untested"].as_array().unwrap();
    let rows = js(
        c,
        "return [...document.querySelectorAll('table.untested tbody tr')].map(r => r.innerText)",
    )
    .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), untested.len(), "{rows:?} {untested:?}");
    for (row, u) in rows.iter().zip(untested) {
        assert!(
            row.as_str().unwrap().contains(u["why"].as_str().unwrap()),
            "{row} {u}"
        );
    }
    assert_eq!(
        js(
            c,
            "return document.documentElement.scrollWidth <= window.innerWidth && \
             [...document.querySelectorAll('main .scroll')].every(d => d.scrollWidth <= d.clientWidth)"
        )
        .await,
        json!(true),
        "/agent overflows at 1280 px"
    );
    assert_eq!(
        js(
            c,
            "return document.getElementById('agent-pass').dataset.running"
        )
        .await,
        json!("false")
    );
    shot(c, "agent").await;
    // The hypothesis opens in place; the diagnosis and proposal links reach their page.
    click(c, Locator::Css("#case-case_billing td.diagnosis summary")).await;
    assert!(
        text(c, "#case-case_billing td.diagnosis blockquote")
            .await
            .contains("invoices are billing")
    );
    click(c, Locator::Css("#case-case_billing a.diagnosis")).await;
    until(
        c,
        "return location.pathname === '/review/support/v3' && location.hash === '#diag-h' \
         && !!document.getElementById('diag-h')",
        10,
    )
    .await;
    c.goto(&s.url("/agent")).await.unwrap();
    click(c, Locator::Css("#case-case_billing a.proposal")).await;
    until(c, "return location.pathname === '/review/support/v3'", 10).await;
    assert!(text(c, "h1").await.contains("support@v3"));

    // A pass over the API: `GET /v1/agent` says it ran; the open page (console.js polls the
    // pass's part) shows what it did without a reload.
    c.goto(&s.url("/agent")).await.unwrap();
    js(c, "window.__same_page = 7; return true").await;
    let before = chrono::Utc::now();
    let r = http
        .post(s.url("/v1/agent/pass"))
        .bearer_auth(editor)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let api: Value = http
        .get(s.url("/v1/agent"))
        .bearer_auth(editor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pass = &api["pass"];
    assert_eq!(pass["running"], json!(false), "{pass}");
    let started: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(pass["started_at"].clone()).unwrap();
    assert!(
        started >= before && pass["finished_at"].is_string(),
        "{pass}"
    );
    let lines: Vec<&str> = pass["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lines[0].ends_with("reading the inference and feedback log")
            && lines.last().unwrap().contains("pass done"),
        "{lines:?}"
    );
    until(
        c,
        "return document.querySelector('#agent-pass p.state').innerText.includes('the last pass began')",
        20,
    )
    .await;
    assert_eq!(js(c, "return window.__same_page").await, json!(7));
    assert!(text(c, "#agent-pass p.state").await.contains("idle"));
    click(c, Locator::Css("#agent-pass summary")).await;
    assert!(
        text(c, "#agent-pass pre.pass-lines")
            .await
            .contains("reading the inference and feedback log")
    );
    assert!(
        text(c, "#case-case_all")
            .await
            .contains("waiting: case case_billing")
    );
    shot(c, "agent-after-pass").await;
}

async fn review_state(d: &Path, seq: u32) -> ReviewState {
    let store = metaprompt_registry::open(d.join("lib.db")).await.unwrap();
    let v = store.versions("support").await.unwrap();
    store.close().await;
    v.iter().find(|v| v.seq == seq).unwrap().review
}

#[tokio::test(flavor = "multi_thread")]
async fn console_in_a_real_browser_review_roles_escaping_live_runs_and_production() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::from_millis(60)).await;
    setup(d, &mock).await;
    seed_library(d).await;
    let reviewer = token(d, "reviewer").await;
    let viewer = token(d, "viewer").await;
    let editor = token(d, "editor").await;
    let runner = token(d, "runner").await;
    let task = route_task_in_root(d);
    let s = Server::start(d, &["--tasks", "tasks"]);
    let http = reqwest::Client::new();
    traffic(&http, &s, &runner, 40).await;

    // Headers every page carries; unsigned visitors go to sign in.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(s.url("/review"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=/review");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // Bad requests are pages that name what was wrong, never a 500.
    let page = |path: &str| {
        let url = s.url(path);
        let cookie = format!("metaprompt_token={viewer}");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.text().await.unwrap())
        }
    };
    for (path, want, names) in [
        ("/prompts/nosuch", StatusCode::NOT_FOUND, "nosuch"),
        (
            "/prompts/support/diff?from=v9",
            StatusCode::NOT_FOUND,
            "from",
        ),
        (
            "/prompts/support/diff?view=sideways",
            StatusCode::BAD_REQUEST,
            "view",
        ),
        ("/?filter=bogus", StatusCode::BAD_REQUEST, "filter"),
        ("/?page=x", StatusCode::BAD_REQUEST, "page"),
        ("/production?days=0", StatusCode::BAD_REQUEST, "days"),
        ("/production?prompt=nosuch", StatusCode::NOT_FOUND, "nosuch"),
        ("/runs/nosuch", StatusCode::NOT_FOUND, "nosuch"),
        ("/review/support/v99", StatusCode::NOT_FOUND, "v99"),
        ("/agent?prompt=nosuch", StatusCode::NOT_FOUND, "nosuch"),
        ("/agent?promt=support", StatusCode::BAD_REQUEST, "promt"),
    ] {
        let (st, body) = page(path).await;
        assert_eq!(st, want, "{path}: {body}");
        assert!(
            body.contains(names) && body.contains("<main"),
            "{path}: {body}"
        );
    }
    let (st, body) = post_form(
        &s.url("/review/support/v3"),
        Some(&reviewer),
        None,
        &[("csrf", "x"), ("decision", "maybe")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, body) = post_form(&s.url("/login"), None, None, &[("token", "mp_wrong")]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("unknown or revoked"), "{body}");

    let driver = chromedriver(d).await;
    let c = browser(&driver, &d.join("profile")).await;

    // A reviewer signs in, opens the queue, reads the diff, approves with a comment.
    c.goto(&s.url("/review")).await.unwrap();
    shot(&c, "login").await;
    sign_in(&c, &s, "/review", &reviewer).await;
    shot(&c, "review-queue").await;
    assert!(text(&c, "table.queue").await.contains("support@v2"));
    click(&c, Locator::LinkText("support@v2")).await;
    until(&c, "return location.pathname === '/review/support/v2'", 10).await;
    let diff = text(&c, "table.diff").await;
    assert!(
        diff.contains("Invoices, charges and refunds are billing."),
        "{diff}"
    );
    assert!(
        text(&c, "section.diagnosis, #ev-h")
            .await
            .contains("Evidence")
    );
    assert!(text(&c, "#cost-h + p").await.contains("$0.000021"));
    shot(&c, "review-proposal").await;
    type_into(&c, Locator::Id("comment"), "better on billing questions").await;
    click(&c, Locator::Id("approve")).await;
    until(&c, "return location.search.includes('decided=approve')", 10).await;
    let audit = text(&c, "table.events").await;
    assert!(
        audit.contains("approve")
            && audit.contains("better on billing questions")
            && audit.contains("reviewer"),
        "{audit}"
    );
    // The database has it: the version is approved, the audit event is there.
    assert_eq!(review_state(d, 2).await, ReviewState::Approved);
    let store = metaprompt_registry::open(d.join("lib.db")).await.unwrap();
    let events = store.events("support").await.unwrap();
    store.close().await;
    assert!(
        events.iter().any(|e| e.kind.as_str() == "review"
            && e.decision.as_deref() == Some("approve")
            && e.actor == "reviewer"
            && e.comment.as_deref() == Some("better on billing questions")),
        "{events:?}"
    );
    // Rejecting without a reason is refused, with the reason named.
    c.goto(&s.url("/review/support/v3")).await.unwrap();
    let diagnosis = text(&c, "section.diagnosis").await;
    for want in [
        "topic=billing",
        "invoices are billing",
        "0.105",
        "0.421",
        "answered other ×41",
    ] {
        assert!(diagnosis.contains(want), "{want}: {diagnosis}");
    }
    shot(&c, "review-agent-proposal").await;
    click(&c, Locator::Id("reject")).await;
    until(&c, "return document.title.startsWith('Bad Request')", 10).await;
    assert!(text(&c, "p.error").await.contains("comment"));
    assert_eq!(review_state(d, 3).await, ReviewState::Proposed);
    agent_page(&c, &s, &http, &editor).await;

    // Canary the approved version on production; its traffic shows per version and per slice.
    let st = http
        .put(s.url("/v1/prompts/support/labels/production/split"))
        .bearer_auth(&reviewer)
        .json(&json!({"version": "v2", "weight": 50}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::OK);
    traffic(&http, &s, &runner, 60).await;
    c.goto(&s.url("/production?prompt=support")).await.unwrap();
    for series in ["v1", "v2", "topic=billing", "topic=login", "all"] {
        let n = js(&c, &format!(
            "return document.querySelectorAll('figure.chart svg g.series[data-series^=\"{series} (n\"] polyline').length"
        )).await;
        assert_eq!(n, json!(1), "series {series}");
    }
    assert!(
        text(&c, "div.canary")
            .await
            .contains("always-valid 95% interval")
    );
    shot(&c, "production").await;

    // The library, a prompt with its lineage, a diff; a phone-width library without overflow.
    c.goto(&s.url("/")).await.unwrap();
    let lib = text(&c, "table.library").await;
    assert!(
        lib.contains("support") && lib.contains("production → v1"),
        "{lib}"
    );
    shot(&c, "library").await;
    c.goto(&s.url("/prompts/support")).await.unwrap();
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('svg.lineage circle').length"
        )
        .await,
        json!(3)
    );
    shot(&c, "prompt").await;
    c.goto(&s.url("/prompts/support/diff?from=v1&to=v3&view=split"))
        .await
        .unwrap();
    assert!(
        text(&c, "table.diff.split")
            .await
            .contains("Answer with one word.")
    );
    shot(&c, "diff").await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&s.url("/")).await.unwrap();
    assert_eq!(
        js(
            &c,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        .await,
        json!(true)
    );
    shot(&c, "library-phone").await;
    c.set_window_size(1280, 1000).await.unwrap();
    // Keyboard: the first Tab reaches the skip link.
    type_into(&c, Locator::Css("body"), "\u{E004}").await;
    assert_eq!(
        c.active_element().await.unwrap().text().await.unwrap(),
        "Skip to content"
    );

    // A prompt holding a script renders it as text, and nothing runs.
    c.goto(&s.url("/prompts/xss")).await.unwrap();
    assert!(
        text(&c, "dl.file")
            .await
            .contains("<script>alert(1)</script>")
    );
    assert!(c.get_alert_text().await.is_err(), "an alert is open");
    assert_eq!(
        js(&c, "return document.querySelectorAll('script').length").await,
        json!(1)
    );
    assert_eq!(
        js(&c, "return document.querySelectorAll('main img').length").await,
        json!(0)
    );
    let source = c.source().await.unwrap();
    assert!(
        source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "not escaped"
    );
    shot(&c, "xss").await;

    // A running optimization's page follows it without a reload.
    let start_run = || async {
        let run: Value = http
            .post(s.url("/v1/runs"))
            .bearer_auth(&editor)
            .json(&json!({"kind": "optimize", "request": {
                "task": task, "algorithm": "fewshot", "rounds": 4, "patience": 4, "minibatch": 6,
                "demos": 2, "name": "route"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        run["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{run:#}"))
            .to_string()
    };
    let id = start_run().await;
    c.goto(&s.url(&format!("/runs/{id}"))).await.unwrap();
    assert_eq!(
        js(&c, "return document.getElementById('live').dataset.status").await,
        json!("running")
    );
    js(&c, "window.__same_page = 42; return true").await;
    until(
        &c,
        "return Number(document.getElementById('live').dataset.updates || 0) >= 1",
        60,
    )
    .await;
    until(
        &c,
        "return Number(document.getElementById('rounds').textContent) >= 1",
        120,
    )
    .await;
    shot(&c, "run-live").await;
    until(&c, "return document.getElementById('live').dataset.status === 'ended' && !!document.getElementById('result-h')", 300).await;
    assert_eq!(
        js(&c, "return window.__same_page").await,
        json!(42),
        "the page was reloaded"
    );
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#live figure.chart svg g.series').length >= 2"
        )
        .await,
        json!(true)
    );
    let result = text(&c, "section.result").await;
    assert!(
        result.contains("The kept prompt as the model sees it")
            && result.contains("Question: {{ question }}"),
        "{result}"
    );
    assert!(
        result.contains("$0") || result.contains("unpriced") || result.contains('$'),
        "{result}"
    );
    shot(&c, "run-finished").await;
    c.goto(&s.url("/runs")).await.unwrap();
    assert!(text(&c, "table.runs").await.contains(&id));
    shot(&c, "runs").await;
    console_agrees_with_the_cli(&c, &s, &http, &editor, d, &id).await;
    // Cancel another from its page.
    let id2 = start_run().await;
    c.goto(&s.url(&format!("/runs/{id2}"))).await.unwrap();
    click(&c, Locator::Css("form.inline button")).await;
    until(
        &c,
        &format!(
            "return location.pathname === '/runs/{id2}' && \
             document.querySelector('#live .state').textContent.includes('cancelled')"
        ),
        60,
    )
    .await;
    assert!(text(&c, "#live").await.contains("resume"));
    // Sign out: the cookie is gone, pages send to sign in again.
    click(&c, Locator::Css("div.who button")).await;
    until(&c, "return location.pathname === '/login'", 10).await;
    c.goto(&s.url("/review")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");

    // A viewer reads but has no decision to make, and cannot forge one.
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &s, "/review/support/v3", &viewer).await;
    assert!(
        c.find(Locator::Id("approve")).await.is_err(),
        "a viewer sees an approve button"
    );
    assert!(
        text(&c, "#decide-h + p")
            .await
            .contains("needs the reviewer role")
    );
    let csrf = c
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let url = s.url("/review/support/v3");
    let (st, body) = post_form(
        &url,
        Some(&viewer),
        None,
        &[("csrf", &csrf), ("decision", "approve")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("reviewer"), "{body}");
    // A reviewer's cookie without the session's csrf field, or from another site: refused.
    let (st, body) = post_form(&url, Some(&reviewer), None, &[("decision", "approve")]).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("csrf"), "{body}");
    let (st, _) = post_form(
        &url,
        Some(&reviewer),
        None,
        &[("csrf", &csrf), ("decision", "approve")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "another session's csrf value");
    let (st, body) = post_form(
        &url,
        Some(&reviewer),
        Some("http://evil.example"),
        &[("csrf", &csrf), ("decision", "approve")],
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let (st, location) = post_form(&url, None, None, &[("decision", "approve")]).await;
    assert_eq!(
        (st, location.starts_with("/login")),
        (StatusCode::SEE_OTHER, true)
    );
    assert_eq!(
        review_state(d, 3).await,
        ReviewState::Proposed,
        "a forged post changed the library"
    );

    c.close().await.unwrap();
    drop(driver);
}
