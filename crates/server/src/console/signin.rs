//! Signing in and out of the console: the sign-in form (`GET /login`), the token check that
//! sets the HttpOnly cookie (`POST /login`), `POST /logout`, and where a person is sent
//! afterwards. `next` is read the way a browser reads a link on this site ([`safe_next`]) and
//! kept only when it stays here; every redirect carries a valid `Location` ([`see_other`]).

use std::sync::OnceLock;

use axum::Router;
use axum::routing::{get, post};

use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::{COOKIE, Nav, PageError, PageResult, SESSION_SECS, Session, check_form, layout};
use crate::AppState;
use crate::auth::Auth;

/// `GET /login`, `POST /login`, `POST /logout`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
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
pub(super) fn see_other(location: &str) -> Response {
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
    use super::super::{encode, to_login};
    use super::*;
    use axum::http::Uri;
    use metaprompt_registry::service::Role;

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
}
