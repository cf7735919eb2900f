//! The web console at `/`: the library, a prompt's versions and lineage, diffs, the review
//! queue, runs (live), production health and the agent at work (`/agent`: its pass live, its
//! cases), as server-rendered HTML (maud) over the same library, runs and agent state the JSON
//! API reads, with the same tokens and roles.
//!
//! ```text
//! browser ──GET /login, POST /login (token)──> Set-Cookie: metaprompt_token (HttpOnly, SameSite=Strict)
//! browser ──GET page (cookie)──> Session (token → role) ──> page ──> HTML (+ console.css, console.js)
//! browser ──POST form (cookie + csrf field)──> Session + check_form ──> library rules ──> 303
//! console.js ──EventSource /runs/ID/events──> on progress: GET /runs/ID/live (HTML fragment)
//! ```
//!
//! - Sign-in keeps the bearer token in an HttpOnly, `SameSite=Strict` cookie; every page
//!   checks it as the API checks `Authorization` (revocation takes effect within
//!   [`crate::auth::TOKEN_TTL`]). With `--insecure-local` there is no sign-in.
//! - Sign-in ([`signin`]) returns to `next` only if it is a path of this site once read the
//!   way a browser reads it (WHATWG URL parsing: tabs and newlines dropped, `\` as `/`, dot
//!   segments resolved), as that normalized path and query; anything else goes to `/`. Every
//!   redirect has a valid `Location`.
//! - Forms carry a CSRF field: an HMAC of a fixed message keyed by the session's token (a
//!   page of another site can read neither), and a POST whose `Origin` is another host is
//!   refused. Roles are checked again on every POST, so a viewer's forged form is a 403.
//! - Every string from the library goes through maud's escaping; the Content-Security-Policy
//!   allows scripts and styles only from `/assets/` (no inline script, no inline style), so a
//!   prompt holding `<script>` is text.
//! - Charts are SVG drawn here ([`charts`]); `console.js` (ours, no dependencies) only makes
//!   a running run's page and the agent's pass update live. Nothing is fetched from another
//!   host: it works offline.

mod agent;
pub mod charts;
mod live;
mod pages;
mod signin;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use maud::{DOCTYPE, Markup, html};
use metaprompt_registry::service::Role;
use sha2::Sha256;

use crate::AppState;
use crate::auth::{Auth, Caller};
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "metaprompt_token";
/// How long a sign-in lasts (the cookie's `Max-Age`).
const SESSION_SECS: u64 = 12 * 3600;

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");

/// Scripts and styles only from this server, no inline script or style, no frames, forms only
/// back here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (merged into the server's router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::library))
        .route("/prompts/{name}", get(pages::prompt))
        .route("/prompts/{name}/diff", get(pages::diff))
        .route("/review", get(pages::queue))
        .route(
            "/review/{name}/{version}",
            get(pages::proposal).post(pages::decide),
        )
        .route("/runs", get(live::runs))
        .route("/runs/{id}", get(live::run))
        .route("/runs/{id}/live", get(live::run_fragment))
        .route("/runs/{id}/events", get(live::run_events))
        .route("/runs/{id}/cancel", post(live::cancel))
        .route("/production", get(live::production))
        .route("/agent", get(agent::page))
        .route("/agent/live", get(agent::live))
        .route("/assets/console.css", get(|| asset(CSS, "text/css")))
        .route("/assets/console.js", get(|| asset(JS, "text/javascript")))
        .merge(signin::routes())
        .layer(middleware::from_fn(security_headers))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "max-age=3600".to_string()),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A signed-in person (or `local` with `--insecure-local`).
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The value every form of this session carries.
    pub csrf: String,
}

impl Session {
    pub fn can(&self, role: Role) -> bool {
        self.caller.role >= role
    }
}

/// The key of the CSRF value without tokens: random per process.
fn local_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn csrf_for(key: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(b"metaprompt").unwrap_or_else(|_| unreachable!())
    });
    mac.update(b"metaprompt console form");
    hex::encode(mac.finalize().into_bytes())
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn to_login(uri: &Uri, why: Option<&str>) -> Response {
    let next = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut url = format!("/login?next={}", encode(next));
    if let Some(w) = why {
        url.push_str("&why=");
        url.push_str(w);
    }
    signin::see_other(&url)
}

/// Percent-encoding for a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let cache = match &state.auth {
            Auth::Open => {
                return Ok(Session {
                    caller: Caller {
                        name: "local".into(),
                        role: Role::Admin,
                    },
                    csrf: csrf_for(local_key()),
                });
            }
            Auth::Tokens(cache) => cache,
        };
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(to_login(&parts.uri, None));
        };
        match cache.caller(&token).await {
            Ok(Some(caller)) => Ok(Session {
                caller,
                csrf: csrf_for(token.as_bytes()),
            }),
            Ok(None) => Err(to_login(&parts.uri, Some("revoked"))),
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// Refuse a form post from another site: a wrong or missing CSRF field, or an `Origin` that
/// is not this host. Both are 403s with a page that says which.
pub fn check_form(session: &Session, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin != "null" && origin_host != host {
            return Err(PageError::forbidden(format!(
                "this form was sent from {origin}, not from this console; nothing was changed"
            )));
        }
    }
    let same = csrf.len() == session.csrf.len()
        && csrf
            .bytes()
            .zip(session.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(PageError::forbidden(
            "the form's csrf field is missing or not this session's (reload the page and try again); nothing was changed",
        ));
    }
    Ok(())
}

/// An error as a page: the API's status and message, in the console's layout.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl PageError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message))
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let title = e.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (e.status.as_u16()) " " (title) }
            p.error role="alert" {
                (e.message)
                @if let Some(p) = &e.param { " (" code { (p) } ")" }
            }
            p { a href="/" { "Back to the library" } }
        };
        (e.status, layout(title, None, Nav::None, body)).into_response()
    }
}

pub type PageResult = Result<Response, PageError>;

/// Which part of the navigation is the current page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Library,
    Review,
    Runs,
    Production,
    Agent,
    None,
}

/// The page around `body`: navigation, who is signed in, the assets.
pub fn layout(title: &str, session: Option<&Session>, nav: Nav, body: Markup) -> Html<String> {
    let link = |href: &str, name: &str, here: bool| {
        html! { a href=(href) aria-current=[here.then_some("page")] { (name) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · metaprompt" }
                    link rel="stylesheet" href="/assets/console.css";
                    script src="/assets/console.js" defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/" { "metaprompt" }
                        nav aria-label="console" {
                            (link("/", "Library", nav == Nav::Library))
                            (link("/review", "Review", nav == Nav::Review))
                            (link("/runs", "Runs", nav == Nav::Runs))
                            (link("/production", "Production", nav == Nav::Production))
                            (link("/agent", "Agent", nav == Nav::Agent))
                        }
                        @if let Some(s) = session {
                            div.who {
                                span { (s.caller.name) " · " (s.caller.role.to_string()) }
                                @if s.caller.name != "local" {
                                    form method="post" action="/logout" {
                                        input type="hidden" name="csrf" value=(s.csrf);
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                    main #main { (body) }
                }
            }
        }
        .into_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_value_depends_on_the_token() {
        assert_ne!(csrf_for(b"a"), csrf_for(b"b"));
        assert_eq!(csrf_for(b"a"), csrf_for(b"a"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; metaprompt_token=mp_abc"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("mp_abc"));
    }
}
