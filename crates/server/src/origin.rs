//! Cross-site requests refused, for every route and with or without tokens.
//!
//! A page open in the operator's browser can send requests to the server (a form post, a
//! `fetch` in `no-cors` mode, an image), and with DNS rebinding can even read the answers under
//! a name of its own. Three checks close that, in [`guard`] (before any handler) and
//! [`crate::body::Body`]:
//! 1. **Host**: the `Host` header must be an IP address, `localhost` (or `*.localhost`), or a
//!    name the operator lists (`[server] hosts`, `serve --host NAME`; `"*"` allows any). A
//!    rebinding page's requests carry its own name and get a 421.
//! 2. **Origin**: a state-changing request (any method but GET, HEAD, OPTIONS) whose `Origin`
//!    is not this server's own (same host and port as `Host`; `null` included), or whose
//!    `Sec-Fetch-Site` says `cross-site` or `same-site`, is a 403. Programs (curl, SDKs) send
//!    neither header and are not affected.
//! 3. **JSON only**: a JSON endpoint needs `Content-Type: application/json`, which a browser
//!    cannot send cross-site without a preflight this server never grants (415 otherwise).
//!
//! `--insecure-local` keeps all three: it removes tokens, not these checks.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;

/// The names a request may address this server by (besides IP literals and `localhost`).
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    names: Vec<String>,
    any: bool,
}

impl Hosts {
    /// From `[server] hosts` (names, without port; `*` allows any name).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Self {
        let mut hosts = Self::default();
        for n in names {
            let n = n.as_ref().trim().trim_end_matches('.').to_ascii_lowercase();
            if n == "*" {
                hosts.any = true;
            } else if !n.is_empty() {
                hosts.names.push(n);
            }
        }
        hosts
    }

    /// May a request carry this `Host` (with or without a port)?
    pub fn allows(&self, host_header: &str) -> bool {
        let Some(name) = host_name(host_header) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.any
            || name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

/// The name part of a `Host` value: `[::1]:8080` → `::1`, `a.b:80` → `a.b`; `None` when it is
/// not a well-formed host.
fn host_name(value: &str) -> Option<&str> {
    let value = value.trim();
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        (ip, after.strip_prefix(':'))
    } else {
        match value.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (value, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    ok.then_some(name)
}

/// Refuse what a page of another site could send (see the module doc).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state.hosts, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(hosts: &Hosts, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = match headers.get(header::HOST) {
        Some(h) => Some(h.to_str().ok().filter(|h| hosts.allows(h)).ok_or_else(|| {
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "unknown_host",
                format!(
                    "this server does not answer to the host {:?}; the operator lists its names in \
                     [server] hosts (or serve --host NAME)",
                    String::from_utf8_lossy(h.as_bytes())
                ),
            )
            .param("Host")
        })?),
        // HTTP/1.0 without Host: no browser sends that.
        None => None,
    };
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |why: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!(
                "{why}; requests that change state are accepted only from this server's own pages or from programs"
            ),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !matches!(site, "same-origin" | "none") {
            return Err(refuse(format!("Sec-Fetch-Site is {site:?}")).param("Sec-Fetch-Site"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let same = origin
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .is_some_and(|(_, authority)| {
                host.is_some_and(|h| authority.eq_ignore_ascii_case(h.trim()))
            });
        if !same {
            return Err(
                refuse(format!("the request comes from {origin:?}, another site")).param("Origin"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed_names() {
        let hosts = Hosts::new(["Prompts.Example.com", ""]);
        for ok in [
            "127.0.0.1:8080",
            "[::1]:9",
            "localhost",
            "LOCALHOST:80",
            "app.localhost:1",
            "10.0.0.7",
            "prompts.example.com",
            "prompts.example.com.:443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "",
            "a b",
            "x:80:80x",
            "[::1",
            "127.0.0.1:",
            "example.com@evil",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        assert!(Hosts::new(["*"]).allows("anything.example"));
    }

    #[test]
    fn state_changing_requests_from_another_site_are_refused() {
        let hosts = Hosts::default();
        let h = "127.0.0.1:8080";
        let ok = |m: Method, pairs: &[(&'static str, &str)]| check(&hosts, &m, &headers(pairs));
        assert!(ok(Method::POST, &[("host", h)]).is_ok(), "a program");
        assert!(
            ok(
                Method::POST,
                &[
                    ("host", h),
                    ("origin", "http://127.0.0.1:8080"),
                    ("sec-fetch-site", "same-origin")
                ]
            )
            .is_ok()
        );
        assert!(
            ok(
                Method::GET,
                &[("host", h), ("origin", "http://evil.example")]
            )
            .is_ok()
        );
        for (name, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("origin", "http://127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8080.evil.example"),
            ("origin", "file://127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                let e = ok(m.clone(), &[("host", h), (name, value)]).unwrap_err();
                assert_eq!(e.status, StatusCode::FORBIDDEN, "{m} {name}: {value}");
            }
        }
        let e = ok(Method::GET, &[("host", "rebind.evil.example:8080")]).unwrap_err();
        assert_eq!(e.status, StatusCode::MISDIRECTED_REQUEST);
    }
}
