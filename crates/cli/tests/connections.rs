//! The connection limits of `metaprompt serve` (`[server]` `header_read_timeout_secs`,
//! `idle_timeout_secs`, `max_connections`) against the real binary over raw TCP, and the web
//! console's sign-in redirects with hostile `next` values end to end.
//!
//! Every server is on 127.0.0.1, port 0, stopped by PID; every read has a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, mock_model, setup, token};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_SECS: u64 = 1;
const IDLE_SECS: u64 = 2;
const MAX_CONNECTIONS: usize = 4;

/// `setup`'s library and config, with short connection limits in its `[server]` table.
async fn limited(dir: &Path, mock: &wiremock::MockServer) {
    setup(dir, mock).await;
    let path = dir.join("metaprompt.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains("[server]\n"), "{config}");
    let config = config.replacen(
        "[server]\n",
        &format!(
            "[server]\nheader_read_timeout_secs = {HEADER_SECS}\nidle_timeout_secs = {IDLE_SECS}\n\
             max_connections = {MAX_CONNECTIONS}\n"
        ),
        1,
    );
    std::fs::write(path, config).unwrap();
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(&s.addr).await.unwrap()
}

/// One response (Content-Length bodies: what these routes answer with).
async fn response(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if text.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
            .await
            .expect("a response within 20 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

async fn get(s: &Server, c: &mut TcpStream, path: &str) -> String {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes())
        .await
        .unwrap();
    response(c).await
}

/// How long until the server closes `c`.
async fn closed(c: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(started.elapsed()), c.read(&mut buf)).await
        {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_bounded_by_the_server_table_and_sigterm_still_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Model calls slower than both timeouts: they must not be cut.
    let mock = mock_model(Duration::from_millis(2500)).await;
    limited(d, &mock).await;
    let runner = token(d, "runner").await;
    let mut s = Server::start(d, &[]);

    // A keep-alive client: several requests on one connection, one of them a model call
    // longer than the idle and header timeouts.
    let mut kept = connect(&s).await;
    assert!(
        get(&s, &mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let body = json!({"inputs": {"question": "my invoice"}}).to_string();
    kept.write_all(
        format!(
            "POST /v1/prompts/support/run HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {runner}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            s.addr,
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let r = response(&mut kept).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("billing"),
        "{r}"
    );
    // Between requests, longer than the header timeout, shorter than the idle one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        get(&s, &mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Then idle: closed after idle_timeout_secs.
    let took = closed(&mut kept, Duration::from_secs(6)).await;
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Headers a byte at a time: closed after header_read_timeout_secs.
    let mut slow = connect(&s).await;
    let started = Instant::now();
    let mut sent = 0;
    for b in
        b"GET /healthz HTTP/1.1\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    {
        if slow.write_all(&[*b]).await.is_err() {
            break;
        }
        sent += 1;
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await
        {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?} after {sent} bytes"
    );

    // More connections than max_connections that never send a byte: they are idle, so a new
    // client gets in at once and they are closed to make room.
    let mut silent = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 2 {
        silent.push(connect(&s).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut fresh = connect(&s).await;
    assert!(
        get(&s, &mut fresh, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    drop(fresh);
    for c in &mut silent {
        closed(c, Duration::from_secs(3)).await;
    }

    // max_connections in the middle of their headers hold their slots: the next client waits
    // in the backlog until the header timeout closes them, then is answered.
    let mut stuck = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut c = connect(&s).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        stuck.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut waiting = connect(&s).await;
    assert!(
        get(&s, &mut waiting, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    for c in &mut stuck {
        closed(c, Duration::from_secs(1)).await;
    }

    // SIGTERM: a model call in flight is answered, an idle connection is closed, the server
    // exits cleanly.
    let mut idle = connect(&s).await;
    assert!(
        get(&s, &mut idle, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut inflight = connect(&s).await;
    inflight
        .write_all(
            format!(
                "POST /v1/prompts/support/run HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {runner}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                s.addr,
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(closed(&mut idle, Duration::from_secs(2)).await < Duration::from_secs(1));
    let r = response(&mut inflight).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("billing"),
        "{r}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let st = s.child.wait().unwrap();
        (st, s.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
}

/// Hostile `next` values: each one, and what it must become (`/` when it would leave the
/// site in a browser).
const HOSTILE: [(&str, &str); 14] = [
    ("/\t/evil.example", "/"),
    ("/\r\n/evil.example", "/"),
    ("\t//evil.example", "/"),
    (" //evil.example", "/"),
    ("\x00//evil.example", "/"),
    ("/\\evil.example", "/"),
    ("\\\\evil.example", "/"),
    ("/.//evil.example", "/"),
    ("/%2e//evil.example", "/"),
    ("https://evil.example/", "/"),
    ("//evil.example\u{3002}com/", "/"),
    ("javascript:alert(1)", "/"),
    ("/a\x01b", "/a%01b"),
    ("/review?x=1", "/review?x=1"),
];

/// Percent-encoding for a query or form value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn location(r: &reqwest::Response, next: &str) -> String {
    assert_eq!(r.status().as_u16(), 303, "{next:?}");
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location for {next:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_redirects_stay_on_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let viewer = token(d, "viewer").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // --insecure-local: GET /login redirects at once.
    let mut open = Server::start(d, &["--insecure-local"]);
    for (next, want) in HOSTILE {
        let r = http
            .get(open.url(&format!("/login?next={}", encode(next))))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&r, next), want, "{next:?}");
    }
    open.kill9();

    // Tokens: POST /login with a good token and a hostile next sets the cookie and goes to a
    // local path.
    let s = Server::start(d, &[]);
    for (next, want) in HOSTILE {
        let r = http
            .post(s.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}&next={}", encode(&viewer), encode(next)))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&r, next), want, "{next:?}");
        let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap();
        assert!(cookie.starts_with("metaprompt_token=mp_"), "{cookie}");
    }
}
