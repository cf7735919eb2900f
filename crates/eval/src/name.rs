//! The one rule for names that become library keys and path segments (task names, prompt
//! names): a letter or digit, then letters, digits, `-`, `_`, `.`, at most 100 characters.
//! It has no `/`, `\`, `..` prefix or leading dot, so a name checked here is safe as one
//! segment of a file path: a task named `../../x` is refused when the task is loaded, before
//! anything is spent, not when its result reaches the library.

/// The longest name.
pub const MAX_LEN: usize = 100;

/// What a valid name looks like, for error messages.
pub const EXPECTED: &str =
    "letters, digits, `-`, `_`, `.`, starting with a letter or digit (at most 100)";

/// Is `name` a valid name?
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `name` turned into a valid name: every other character becomes `-`, a leading non-alphanumeric
/// character is dropped, and it is cut to [`MAX_LEN`]; empty becomes `x`. For path segments made
/// from text that was not checked (a model spec, an algorithm name).
pub fn slug(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = s
        .find(|c: char| c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    s.drain(..start);
    s.truncate(MAX_LEN);
    if s.is_empty() { "x".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_a_folder_are_refused_and_slugs_are_always_valid() {
        for ok in ["sst2", "bbh_navigate", "a.b-c_d", "9lives"] {
            assert!(is_valid(ok), "{ok}");
        }
        let long = "a".repeat(101);
        for bad in [
            "",
            "../../x",
            "/etc/passwd",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "C:x",
            "a b",
            "a\0b",
            "é",
            "-x",
            long.as_str(),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
            assert!(is_valid(&slug(bad)), "{bad:?} -> {:?}", slug(bad));
        }
        assert_eq!(slug("../../x"), "x");
        assert_eq!(slug("local:/srv/m.gguf"), "local--srv-m.gguf");
    }
}
