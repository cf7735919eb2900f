//! Masking secrets in text that came from a server or the network before it becomes part of an
//! error, a log line or a stored result.
//!
//! Servers echo what they were sent: a 401 body that quotes the `Authorization` header, a proxy
//! page that prints the request. A [`Redactor`] knows the provider's configured key(s) and
//! masks every occurrence of them, and also masks anything shaped like a credential whatever
//! its value: `Bearer …` / `Basic …` tokens, `sk-…` keys, and the values of `x-api-key`,
//! `api-key`, `api_key`, `apikey` and `authorization` fields.

use std::fmt;

/// What a masked secret is replaced with.
pub const MASK: &str = "[redacted]";

/// Configured keys shorter than this are not searched for (they would mask ordinary words);
/// token-shaped strings are masked regardless.
const MIN_KEY_LEN: usize = 4;

/// Masks configured keys and credential-shaped strings. Cheap to clone; never shows the keys in
/// `Debug`.
#[derive(Clone, Default)]
pub struct Redactor {
    keys: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} keys)", self.keys.len())
    }
}

impl Redactor {
    /// A redactor for these keys (empty and very short ones are ignored).
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys: Vec<String> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().to_string())
            .filter(|k| k.len() >= MIN_KEY_LEN)
            .collect();
        // Longest first, so a key that contains another is masked whole.
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        keys.dedup();
        Self { keys }
    }

    /// `text` with every configured key and every credential-shaped string masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for key in &self.keys {
            if out.contains(key.as_str()) {
                out = out.replace(key.as_str(), MASK);
            }
        }
        redact_tokens(&out)
    }
}

/// Characters a token or key is made of (base64, base64url, hex, JWT dots).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=')
}

/// Field names whose value is a credential.
const SECRET_FIELDS: [&str; 5] = ["x-api-key", "api-key", "api_key", "apikey", "authorization"];
/// Authorization schemes followed by a credential.
const SCHEMES: [&str; 2] = ["bearer", "basic"];
/// Key prefixes that mark a secret on their own (OpenAI `sk-…`, `sk-proj-…`; Anthropic
/// `sk-ant-…`; metaprompt's own API tokens `mp_…`).
const KEY_PREFIXES: [&str; 2] = ["sk-", "mp_"];
/// How many token characters after a prefix make it a key rather than a word.
const MIN_PREFIXED_LEN: usize = 6;
/// How long a token after `Bearer`/`Basic` must be, outside a credential field, to be masked.
const MIN_SCHEME_TOKEN_LEN: usize = 8;

/// `text` with credential-shaped strings masked (no configured keys needed): the values of
/// `Bearer`/`Basic` authorizations and of `x-api-key`-like fields, and `sk-…` keys.
pub fn redact_tokens(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        // A match must start at a word boundary ("task-" does not hold a key).
        let boundary = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
        if boundary && let Some((keep, masked_end)) = secret_at(text, &lower, i) {
            out.push_str(&text[i..keep]);
            out.push_str(MASK);
            i = masked_end;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// If a secret starts at byte `i`: where the kept part (name, separator, scheme) ends and where
/// the masked value ends.
fn secret_at(text: &str, lower: &str, i: usize) -> Option<(usize, usize)> {
    if let Some(found) = scheme_at(text, lower, i, MIN_SCHEME_TOKEN_LEN) {
        return Some(found);
    }
    let rest = &lower[i..];
    for prefix in KEY_PREFIXES {
        if rest.starts_with(prefix) {
            let start = i + prefix.len();
            let end = token_end(text, start);
            if end - start >= MIN_PREFIXED_LEN {
                return Some((start, end));
            }
        }
    }
    for field in SECRET_FIELDS {
        if rest.starts_with(field) {
            let name_end = i + field.len();
            // The field name may end inside quotes; then `:` or `=`, spaces, an opening quote.
            let after = &text[name_end..];
            let sep = after.trim_start_matches(['"', '\'']).trim_start();
            let Some(value) = sep.strip_prefix([':', '=']) else {
                continue;
            };
            let value = value.trim_start().trim_start_matches(['"', '\'']);
            let start = text.len() - value.len();
            // `Authorization: Bearer x`: keep the scheme, mask what follows it however short.
            if let Some(found) =
                scheme_at(text, lower, start, 1).or_else(|| secret_at(text, lower, start))
            {
                return Some(found);
            }
            let end = token_end(text, start);
            if end > start {
                return Some((start, end));
            }
        }
    }
    None
}

/// `Bearer <token>` or `Basic <token>` at byte `i`, the token at least `min_len` long (outside
/// a credential field, a short word after "bearer" is more likely prose than a token).
fn scheme_at(text: &str, lower: &str, i: usize, min_len: usize) -> Option<(usize, usize)> {
    let rest = &lower[i..];
    SCHEMES.iter().find_map(|scheme| {
        let after = rest.strip_prefix(scheme)?;
        if !after.starts_with([' ', '\t']) {
            return None;
        }
        let start = i + scheme.len() + (after.len() - after.trim_start().len());
        let end = token_end(text, start);
        (end - start >= min_len).then_some((start, end))
    })
}

fn token_end(text: &str, start: usize) -> usize {
    text[start..]
        .char_indices()
        .find(|&(_, c)| !is_token_char(c))
        .map_or(text.len(), |(n, _)| start + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_keys_are_masked_wherever_they_appear() {
        let r = Redactor::new(["k3y-without-any-shape", "", "ab"]);
        assert_eq!(
            r.redact("you sent k3y-without-any-shape; k3y-without-any-shape is wrong"),
            "you sent [redacted]; [redacted] is wrong"
        );
        assert_eq!(
            r.redact("ab cd"),
            "ab cd",
            "too-short keys are not searched for"
        );
        assert!(!format!("{r:?}").contains("k3y"));
    }

    #[test]
    fn credential_shaped_strings_are_masked() {
        for (text, want) in [
            (
                "Invalid header Authorization: Bearer abc.DEF-123_x/y+z=",
                "Invalid header Authorization: Bearer [redacted]",
            ),
            ("bearer  eyJhbGciOi.J9", "bearer  [redacted]"),
            (
                "Authorization: Basic dXNlcjpwdw==",
                "Authorization: Basic [redacted]",
            ),
            (
                "Incorrect API key provided: sk-proj-AbC123xyz.",
                "Incorrect API key provided: sk-[redacted]",
            ),
            ("key sk-ant-api03-xx_yy", "key sk-[redacted]"),
            (
                r#"{"x-api-key": "plainvalue42"}"#,
                r#"{"x-api-key": "[redacted]"}"#,
            ),
            ("X-Api-Key=plainvalue42&x=1", "X-Api-Key=[redacted]&x=1"),
            ("?api_key=abc123", "?api_key=[redacted]"),
            (
                r#"'authorization':'Bearer tok'"#,
                r#"'authorization':'Bearer [redacted]'"#,
            ),
        ] {
            assert_eq!(redact_tokens(text), want, "{text}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "Rate limit reached for gpt-4o-mini (requests)",
            "the task-sk-learn pipeline",
            "max_tokens: Field required (invalid_request_error)",
            "sk-abc is short",
            "the api-key header is missing",
            "bearer of bad news",
            "",
            "ünïcödé sk-",
        ] {
            assert_eq!(redact_tokens(text), text);
        }
    }
}
