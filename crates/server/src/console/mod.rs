//! The web console at `/`: the library, a prompt's versions and lineage, diffs, the review
//! queue, runs (live), and production health, as server-rendered HTML (maud) over the same
//! library, runs and agent state the JSON API reads, with the same tokens and roles.
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
//! - Sign-in returns to `next` only if it is a path of this site once read the way a browser
//!   reads it (WHATWG URL parsing: tabs and newlines dropped, `\` as `/`, dot segments
//!   resolved), as that normalized path and query; anything else goes to `/`. Every redirect
//!   has a valid `Location`.
//! - Forms carry a CSRF field: an HMAC of a fixed message keyed by the session's token (a
//!   page of another site can read neither), and a POST whose `Origin` is another host is
//!   refused. Roles are checked again on every POST, so a viewer's forged form is a 403.
//! - Every string from the library goes through maud's escaping; the Content-Security-Policy
//!   allows scripts and styles only from `/assets/` (no inline script, no inline style), so a
//!   prompt holding `<script>` is text.
//! - Charts are SVG drawn here ([`charts`]); `console.js` (ours, no dependencies) only makes
//!   a running run's page update live. Nothing is fetched from another host: it works offline.

pub mod charts;
mod live;
mod pages;

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
use serde::Deserialize;
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
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
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
        .route("/assets/console.css", get(|| asset(CSS, "text/css")))
        .route("/assets/console.js", get(|| asset(JS, "text/javascript")))
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
    see_other(&url)
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

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
    why: Option<String>,
}

/// Where to send someone after signing in: `next` read the way a browser reads a link on
/// this site (the WHATWG URL parser: tabs and newlines removed, leading spaces and control
/// characters stripped, `\` taken for `/`, dot segments resolved), kept only if it stays on
/// this site, as its normalized path and query; else `/`. The result is ASCII with every
/// unsafe character percent-encoded, never starts with `//`, and is a valid header value.
fn safe_next(next: Option<&str>) -> String {
    static BASE: OnceLock<Option<url::Url>> = OnceLock::new();
    let (Some(next), Some(base)) = (
        next,
        BASE.get_or_init(|| url::Url::parse("http://console.invalid/").ok())
            .as_ref(),
    ) else {
        return "/".into();
    };
    let Ok(u) = base.join(next) else {
        return "/".into();
    };
    let same_site = u.scheme() == base.scheme()
        && u.host() == base.host()
        && u.port() == base.port()
        && u.username().is_empty()
        && u.password().is_none();
    let mut local = u.path().to_string();
    if let Some(q) = u.query() {
        local.push('?');
        local.push_str(q);
    }
    // `/.//host` resolves to the path `//host`, which a browser reads as another host.
    if !same_site
        || !local.starts_with('/')
        || local.starts_with("//")
        || local.starts_with("/\\")
        || HeaderValue::from_str(&local).is_err()
    {
        return "/".into();
    }
    local
}

/// A `303 See Other` to a path of this site, always with its `Location`: one that is not a
/// valid header value (none is: every caller builds it with [`safe_next`] or [`encode`]) goes
/// to `/`.
fn see_other(location: &str) -> Response {
    let location =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, location);
    r
}

async fn login_page(
    state: axum::extract::State<AppState>,
    q: axum::extract::Query<LoginQuery>,
) -> Response {
    if matches!(state.auth, Auth::Open) {
        return see_other(&safe_next(q.next.as_deref()));
    }
    login_form(
        q.next.as_deref(),
        q.why.as_deref().map(|w| match w {
            "revoked" => "Your token is unknown or was revoked: sign in again.",
            _ => "Sign in again.",
        }),
        StatusCode::OK,
    )
}

fn login_form(next: Option<&str>, message: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(m) = message { p.error role="alert" { (m) } }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(safe_next(next));
            label for="token" { "API token" }
            input #token type="password" name="token" required autocomplete="current-password"
                autofocus aria-describedby="token-help";
            p #token-help .note { "A token from " code { "metaprompt tokens create --role reviewer --name you" } ". It is kept in an HttpOnly cookie of this site only." }
            button type="submit" { "Sign in" }
        }
    };
    (status, layout("Sign in", None, Nav::None, body)).into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login(
    state: axum::extract::State<AppState>,
    headers: HeaderMap,
    form: Result<axum::extract::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Auth::Tokens(cache) = &state.auth else {
        return see_other("/");
    };
    let Ok(axum::extract::Form(form)) = form else {
        return login_form(
            None,
            Some("The form needs a `token` field."),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let printable = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if origin != "null" && origin.split_once("://").map_or(origin, |(_, h)| h) != host {
            return login_form(
                Some(&next),
                Some("Sign in from this console's own page."),
                StatusCode::FORBIDDEN,
            );
        }
    }
    let caller = if printable {
        cache.caller(token).await
    } else {
        Ok(None)
    };
    match caller {
        Ok(Some(_)) => {
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|p| p.as_bytes() == b"https");
            // `printable` keeps the token to visible ASCII without `;` or `,`: a valid cookie.
            let cookie = format!(
                "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}{}",
                if secure { "; Secure" } else { "" }
            );
            let Ok(cookie) = HeaderValue::from_str(&cookie) else {
                return login_form(
                    Some(&next),
                    Some("That token cannot be kept in a cookie."),
                    StatusCode::BAD_REQUEST,
                );
            };
            let mut r = see_other(&next);
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Ok(None) => login_form(
            Some(&next),
            Some("That token is unknown or revoked."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => PageError(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    session: Session,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<CsrfForm>,
) -> PageResult {
    check_form(&session, &headers, &form.csrf)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
            (header::LOCATION, "/login".to_string()),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/review?x=1")), "/review?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    /// What a `next` may become: a path of this site that a browser, resolving it against
    /// any page of this site, keeps on this site; and a valid header value.
    fn assert_local(next: &str, got: &str) {
        assert!(
            got.starts_with('/') && !got.starts_with("//") && !got.starts_with("/\\"),
            "{next:?} -> {got:?}"
        );
        assert!(
            got.bytes().all(|b| b.is_ascii_graphic()),
            "{next:?} -> {got:?}"
        );
        assert!(HeaderValue::from_str(got).is_ok(), "{next:?} -> {got:?}");
        for page in [
            "http://console.invalid/",
            "https://console.invalid:8443/review/x/v1",
        ] {
            let page = url::Url::parse(page).unwrap();
            let to = page.join(got).unwrap();
            assert_eq!(to.host(), page.host(), "{next:?} -> {got:?} -> {to}");
            assert_eq!(to.port(), page.port(), "{next:?} -> {got:?} -> {to}");
            assert_eq!(to.scheme(), page.scheme(), "{next:?} -> {got:?} -> {to}");
            assert!(to.username().is_empty(), "{next:?} -> {got:?} -> {to}");
        }
        // Normalized: taking it again changes nothing.
        assert_eq!(safe_next(Some(got)), got, "{next:?}");
    }

    #[test]
    fn next_is_read_as_a_browser_reads_it_and_only_a_local_path_is_kept() {
        // Each of these leaves the site in a browser (or is not a path): `/`.
        let away = [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/\t\t/evil.example/x?y",
            "\t//evil.example",
            " //evil.example",
            "\x00//evil.example",
            "\x1f\x0b //evil.example",
            "\r\n//evil.example",
            "//evil.example",
            "///evil.example",
            "////evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "/\\/evil.example",
            "/\t\\evil.example",
            "/./\\evil.example",
            "/.//evil.example",
            "/..//evil.example",
            "/%2e//evil.example",
            "/%2e%2e//evil.example",
            "/x/..//evil.example",
            "/.\\/evil.example",
            "https://evil.example/",
            "HTTPS://evil.example",
            "https:evil.example",
            "ftp://evil.example/",
            "http://evil.example",
            "http://console.invalid:81/",
            "http://evil.example@console.invalid/",
            "//evil.example@console.invalid/",
            "//console.invalid@evil.example/",
            "//evil.example\u{3002}com/",
            "//evil\u{ff0e}example/",
            "//\u{ff45}vil.example/",
            "//[::1]/",
            "//127.0.0.1:8080/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "java\tscript:alert(1)",
            " javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:x",
            "mailto:a@evil.example",
            "http:/\\evil.example",
            "http:\\\\evil.example",
            "",
        ];
        for next in away {
            let got = safe_next(Some(next));
            assert_eq!(got, "/", "{next:?}");
            assert_local(next, &got);
        }
        // These stay on the site, normalized as a browser would.
        let here = [
            ("/review?x=1", "/review?x=1"),
            ("/prompts/a%20b", "/prompts/a%20b"),
            ("/prompts/a b", "/prompts/a%20b"),
            ("/runs/x#top", "/runs/x"),
            ("/a/../review", "/review"),
            ("/../../../etc/passwd", "/etc/passwd"),
            ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
            ("/%09/evil.example", "/%09/evil.example"),
            ("/review?next=//evil.example", "/review?next=//evil.example"),
            ("/x\r\nSet-Cookie: a=b", "/xSet-Cookie:%20a=b"),
            (
                "/\u{ff0f}\u{ff0f}evil.example",
                "/%EF%BC%8F%EF%BC%8Fevil.example",
            ),
            ("/\u{202e}txt", "/%E2%80%AEtxt"),
            ("\u{3000}//evil.example", "/%E3%80%80//evil.example"),
            ("\x7f//evil.example", "/%7F//evil.example"),
            ("/a\x00b", "/a%00b"),
            ("/\x00", "/"),
            ("/ \x01", "/"),
            ("/@evil.example", "/@evil.example"),
            ("review", "/review"),
            ("http://console.invalid/runs", "/runs"),
            ("/review?q=\"<script>\"", "/review?q=%22%3Cscript%3E%22"),
        ];
        for (next, want) in here {
            let got = safe_next(Some(next));
            assert_eq!(got, want, "{next:?}");
            assert_local(next, &got);
        }
    }

    #[test]
    fn no_next_of_tricky_characters_leaves_the_site_or_breaks_the_location_header() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "/",
            "//",
            "\\",
            ".",
            "..",
            "%2e",
            "%2f",
            "%5c",
            "\t",
            "\n",
            "\r",
            " ",
            "\x00",
            "\x0b",
            "\x1f",
            "\x7f",
            "@",
            ":",
            "?",
            "#",
            "evil.example",
            "http:",
            "https:",
            "javascript:",
            "\u{3002}",
            "\u{ff0f}",
            "\u{ff3c}",
            "\u{2215}",
            "\u{3000}",
            "\u{200b}",
            "\u{feff}",
            "é",
            "[::1]",
            ":80",
            "a",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(32);
        for _ in 0..20_000 {
            let n = rng.random_range(1..8);
            let next: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            assert_local(&next, &safe_next(Some(&next)));
        }
    }

    #[test]
    fn every_redirect_of_the_console_has_a_location() {
        for location in ["/", "/review?x=1", "/\r\n", "\x00"] {
            let r = see_other(location);
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            assert!(r.headers().contains_key(header::LOCATION), "{location:?}");
        }
        let uri: Uri = "/prompts/a%0d%0a?x=%00\u{1}"
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let r = to_login(&uri, Some("revoked"));
        assert!(r.headers().contains_key(header::LOCATION));
    }

    /// A server on a new library in `dir`: without tokens, or with one admin token (returned).
    async fn server(dir: &std::path::Path, insecure_local: bool) -> (crate::Running, String) {
        use metaprompt_registry::service::{Token, mint_token, token_hash};
        let library = dir.join("lib.db");
        let secret = mint_token();
        let service = metaprompt_registry::open_service(&library).await.unwrap();
        let token = Token {
            name: "admin".into(),
            role: Role::Admin,
            created_at: chrono::Utc::now(),
            created_by: "test".into(),
            revoked_at: None,
        };
        service
            .add_token(&token, &token_hash(&secret))
            .await
            .unwrap();
        service.close().await;
        let engine = metaprompt_engine::Engine::open(metaprompt_engine::EngineOptions {
            config: metaprompt_llm::Config::parse("").unwrap(),
            cache: None,
            library: Some(library),
            author: "test".into(),
        })
        .await
        .unwrap();
        let options = crate::ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            insecure_local,
            ..crate::ServerOptions::default()
        };
        (crate::start(engine, options).await.unwrap(), secret)
    }

    const HOSTILE: [&str; 12] = [
        "/\t/evil.example",
        "/\r\n/evil.example",
        "\t//evil.example",
        " //evil.example",
        "/\\evil.example",
        "/.//evil.example",
        "/%2e//evil.example",
        "https://evil.example/",
        "//evil.example\u{3002}com",
        "javascript:alert(1)",
        "/a\x01b",
        "\x00",
    ];

    /// The `Location` of a 303, which must be a local path.
    fn local_location(r: &reqwest::Response, next: &str) -> String {
        assert_eq!(r.status().as_u16(), 303, "{next:?}");
        let location = r
            .headers()
            .get("location")
            .unwrap_or_else(|| panic!("no Location for {next:?}"))
            .to_str()
            .unwrap()
            .to_string();
        assert_local(next, &location);
        location
    }

    #[tokio::test]
    async fn sign_in_redirects_stay_on_the_site_through_the_router() {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // --insecure-local: GET /login redirects at once.
        let dir = tempfile::tempdir().unwrap();
        let (running, _) = server(dir.path(), true).await;
        let base = format!("http://{}", running.addr);
        for next in HOSTILE {
            let r = http
                .get(format!("{base}/login?next={}", encode(next)))
                .send()
                .await
                .unwrap();
            let location = local_location(&r, next);
            if next != "/a\x01b" {
                assert_eq!(location, "/", "{next:?}");
            }
        }
        let r = http
            .get(format!("{base}/login?next={}", encode("/review?x=1")))
            .send()
            .await
            .unwrap();
        assert_eq!(local_location(&r, "/review?x=1"), "/review?x=1");
        running.shutdown();
        running.wait().await.unwrap();

        // Tokens: the form keeps a safe next, and POST /login goes there with the cookie.
        let dir = tempfile::tempdir().unwrap();
        let (running, secret) = server(dir.path(), false).await;
        let base = format!("http://{}", running.addr);
        for next in HOSTILE {
            let page = http
                .get(format!("{base}/login?next={}", encode(next)))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status().as_u16(), 200, "{next:?}");
            let page = page.text().await.unwrap();
            assert!(!page.contains("evil"), "{next:?}: {page}");
            let r = http
                .post(format!("{base}/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={}&next={}", encode(&secret), encode(next)))
                .send()
                .await
                .unwrap();
            let location = local_location(&r, next);
            if next != "/a\x01b" {
                assert_eq!(location, "/", "{next:?}");
            }
            let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap();
            assert!(cookie.starts_with("metaprompt_token=mp_"), "{cookie}");
        }
        // A wrong token is the form again, with the safe next in it.
        let r = http
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token=mp_nope&next={}", encode("/\t/evil.example")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(!r.text().await.unwrap().contains("evil"));
        running.shutdown();
        running.wait().await.unwrap();
    }

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
