//! Tests of `listen`.

use super::*;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);

fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(MS * 1200).await;
                "slow"
            }),
        )
        .route(
            "/big",
            get(|| async {
                // 64 MB in 1,024 chunks: the request stays in progress until the last.
                let chunk = Bytes::from("x".repeat(64 << 10));
                Body::from_stream(futures::stream::iter(
                    (0..1024).map(move |_| Ok::<_, Infallible>(chunk.clone())),
                ))
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures::stream::unfold(0, |i| async move {
                    if i == 6 {
                        return None;
                    }
                    tokio::time::sleep(MS * 200).await;
                    Some((Ok::<_, Infallible>(format!("chunk{i};")), i + 1))
                });
                Body::from_stream(chunks)
            }),
        )
}

struct Server {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(header: u64, idle: u64, max_connections: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits {
        header_read_timeout: MS * header as u32,
        idle_timeout: MS * idle as u32,
        max_connections,
    };
    let s = stop.clone();
    let task = tokio::spawn(async move {
        serve(listener, app(), limits, async move { s.cancelled().await }).await;
    });
    Server { addr, stop, task }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// One response: its head and body (Content-Length or chunked until the final chunk).
async fn response(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let body = &text[end + 4..];
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok());
            let done = match length {
                Some(n) => body.len() >= n,
                None => body.ends_with("0\r\n\r\n"),
            };
            if done {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

async fn fetch(c: &mut TcpStream, path: &str) -> String {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    response(c).await
}

/// How long until the server closes `c` (reading and dropping anything it sends).
async fn closed(c: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(started + within, c.read(&mut buf)).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Send `bytes` one at a time, `every` apart, until the server closes the connection;
/// how long that took from the first byte.
async fn trickle(c: &mut TcpStream, bytes: &[u8], every: Duration) -> Duration {
    let started = Instant::now();
    for b in bytes.iter().cycle().take(400) {
        if c.write_all(&[*b]).await.is_err() {
            return started.elapsed();
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, c.read(&mut buf)).await {
            return started.elapsed();
        }
    }
    panic!("still open after 400 bytes");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_at_the_header_timeout() {
    let s = start(500, 5000, 16).await;
    // The first request: counted from the accept.
    let mut c = connect(s.addr).await;
    let took = trickle(&mut c, b"GET /healthz HTTP/1.1\r\nX-A: b\r\n", MS * 40).await;
    assert!(took >= MS * 450 && took < MS * 2500, "{took:?}");
    // A later request: counted from its first byte, not from the previous response.
    let mut c = connect(s.addr).await;
    assert!(fetch(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(MS * 700).await;
    let took = trickle(&mut c, b"GET /healthz HTTP/1.1\r\nX-A: b\r\n", MS * 40).await;
    assert!(took >= MS * 450 && took < MS * 2500, "{took:?}");
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_and_not_before() {
    let s = start(300, 900, 16).await;
    let mut c = connect(s.addr).await;
    assert!(fetch(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
    // Longer than the header timeout, shorter than the idle one: still served.
    tokio::time::sleep(MS * 600).await;
    assert!(fetch(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
    let took = closed(&mut c, Duration::from_secs(5)).await;
    assert!(took >= MS * 850 && took < MS * 2500, "{took:?}");
    // A connection that never sends anything: the header timeout.
    let mut c = connect(s.addr).await;
    let took = closed(&mut c, Duration::from_secs(5)).await;
    assert!(took >= MS * 250 && took < MS * 2000, "{took:?}");
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn slow_responses_and_streams_are_not_cut_by_either_timeout() {
    let s = start(300, 300, 16).await;
    let mut c = connect(s.addr).await;
    let r = fetch(&mut c, "/slow").await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
    let r = fetch(&mut c, "/stream").await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("chunk5;"),
        "{r}"
    );
    // Still kept alive after them.
    assert!(fetch(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn beyond_max_connections_idle_ones_make_room_and_busy_ones_are_waited_for() {
    let s = start(1200, 60_000, 2).await;
    // Two connections that were served and sit idle: a third client gets in at once,
    // and the idle ones are closed.
    let mut idle = [connect(s.addr).await, connect(s.addr).await];
    for c in &mut idle {
        assert!(fetch(c, "/healthz").await.starts_with("HTTP/1.1 200"));
    }
    let started = Instant::now();
    let mut third = connect(s.addr).await;
    assert!(
        fetch(&mut third, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(started.elapsed() < MS * 800, "{:?}", started.elapsed());
    drop(third);
    for c in &mut idle {
        closed(c, Duration::from_secs(2)).await;
    }
    // Two connections that never sent a byte: idle too.
    let mut silent = [connect(s.addr).await, connect(s.addr).await];
    tokio::time::sleep(MS * 100).await;
    let started = Instant::now();
    let mut third = connect(s.addr).await;
    assert!(
        fetch(&mut third, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(started.elapsed() < MS * 800, "{:?}", started.elapsed());
    drop(third);
    for c in &mut silent {
        closed(c, Duration::from_secs(2)).await;
    }
    // Two connections in the middle of their headers hold their slots until the header
    // timeout: the third waits for it.
    let mut busy = [connect(s.addr).await, connect(s.addr).await];
    for c in &mut busy {
        c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    }
    tokio::time::sleep(MS * 100).await;
    let started = Instant::now();
    let mut third = connect(s.addr).await;
    assert!(
        fetch(&mut third, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let waited = started.elapsed();
    assert!(waited >= MS * 900 && waited < MS * 4000, "{waited:?}");
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_loses_its_slot_after_the_idle_timeout() {
    let s = start(1000, 1000, 1).await;
    // 64 MB that the client never reads: the socket buffers fill and writes stall.
    let mut stuck = connect(s.addr).await;
    stuck
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(MS * 300).await;
    // The only slot is held by a request in progress; the next client gets it once the
    // stalled write is cut.
    let started = Instant::now();
    let mut next = connect(s.addr).await;
    assert!(
        fetch(&mut next, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let waited = started.elapsed();
    assert!(waited >= MS * 500 && waited < MS * 5000, "{waited:?}");
    drop(stuck);
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn hostile_request_headers_are_a_clean_4xx_from_hyper() {
    let s = start(2000, 2000, 16).await;
    let long = format!("X-Long: {}\r\n", "a".repeat(500 * 1024));
    let cases: [(&[u8], &str); 8] = [
        (b"X-Evil: a\x01b\r\n", "400"),
        (b"X-Evil: a\x00b\r\n", "400"),
        (b"X-Evil: a\x7fb\r\n", "400"),
        (b"X-Evil: a\rb\r\n", "400"),
        (b"X-Evil: a\r\n folded\r\n", "400"),
        (b"X Evil: a\r\n", "400"),
        (b"X-Evil\x01: a\r\n", "400"),
        (long.as_bytes(), "431"),
    ];
    for (header, status) in cases {
        let mut c = connect(s.addr).await;
        let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
        request.extend_from_slice(header);
        request.extend_from_slice(b"\r\n");
        // The server may answer and close before it has read everything.
        let _ = c.write_all(&request).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?}: {got}",
            String::from_utf8_lossy(&header[..header.len().min(40)])
        );
    }
    // Bytes above 0x7f (obs-text) are allowed by HTTP and reach the handlers, which read
    // them with `to_str().ok()`.
    let mut c = connect(s.addr).await;
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n")
        .await
        .unwrap();
    assert!(response(&mut c).await.starts_with("HTTP/1.1 200"));
    s.stop.cancel();
    s.task.await.unwrap();
}

#[tokio::test]
async fn stop_closes_idle_connections_and_finishes_requests_in_progress() {
    let s = start(5000, 60_000, 16).await;
    let mut idle = connect(s.addr).await;
    assert!(
        fetch(&mut idle, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut slow = connect(s.addr).await;
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(MS * 200).await;
    s.stop.cancel();
    assert!(closed(&mut idle, Duration::from_secs(1)).await < MS * 500);
    let r = response(&mut slow).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("slow"), "{r}");
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returns once the slow request is answered")
        .unwrap();
    // No longer accepting.
    assert!(TcpStream::connect(s.addr).await.is_err());
}
