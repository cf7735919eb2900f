//! XML-like tags left in an instruction: a small instruction-tuned meta model answers with a
//! tag (`<reverse>`, `<classify-sentiment text>`) or mixes tags into its text
//! (`<turn right> Take 5 steps`) where it should write a sentence.

/// The names of the XML-like tags in `text`, lower case: `<word>`, `<word …>` (attributes or
/// free words up to the `>`, on one line), `</word>` and `<word/>`. A `<` that opens no such
/// tag (`x < 10`, `a<b`) names none.
pub(super) fn tags(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices('<') {
        let rest = &text[i + 1..];
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
            .collect();
        if !name.chars().next().is_some_and(char::is_alphabetic) {
            continue;
        }
        let after = &rest[name.len()..];
        let closes = match after.chars().next() {
            Some('>') => true,
            Some('/') => after[1..].starts_with('>'),
            // Free words up to a `>` on the same line, before any other `<`.
            Some(c) if c.is_whitespace() && c != '\n' => after
                .find(['>', '<', '\n'])
                .is_some_and(|k| after[k..].starts_with('>')),
            _ => false,
        };
        if closes {
            found.push(name.to_lowercase());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_found_and_comparisons_are_not() {
        assert_eq!(tags("<reverse>"), ["reverse"]);
        assert_eq!(tags("<classify-sentiment text>"), ["classify-sentiment"]);
        assert_eq!(
            tags("<turn right> Take 5 steps <turn around> Take 1 step"),
            ["turn", "turn"]
        );
        assert_eq!(tags("Answer.</output>"), ["output"]);
        assert_eq!(tags("a line<br/>break"), ["br"]);
        assert!(tags("Answer 1 if x < 10 and y > 3.").is_empty());
        assert!(tags("Say yes if a<b, else no.").is_empty());
        assert!(tags("Use {{ review }} and <= or >= signs.").is_empty());
    }
}
