//! Cleaning an instruction out of the wrapping a small instruction-tuned meta model puts around
//! it: `Here's the new instruction: **Classify the review.**`, `<instruction>Given a list of
//! words, write the opposite of each.</instruction>`, `"Say yes."`. Stripped, the instruction
//! is what the execution model should read; left in, the execution model reads a note to
//! somebody else (and the junk screen would reject a usable instruction as markup).
//!
//! [`clean`] strips, as long as one applies, from the whole text:
//!
//! - a lead-in clause before a colon made only of words like here/here's, is, the, a, new,
//!   improved, revised, updated, better, final, my, your, this, and naming an instruction or a
//!   prompt (`Here's the new instruction:`, `New instruction:`, `**Improved prompt:**`), or a
//!   short one-line clause that opens with here/here's and names an instruction or a prompt,
//!   whatever else it says (`Here's a new instruction that meets your requirement:`); a clause
//!   that says anything else (`Classify the review: answer positive or negative.`) stays;
//! - markdown emphasis around the whole text (`**…**`, `__…__`, `*…*`, `` `…` ``);
//! - one XML-like tag pair around the whole text (`<instruction>…</instruction>`, any name,
//!   attributes allowed), unless it holds nothing (then the tags stay, markup);
//! - a tag pair naming an instruction or a prompt (`<instruction>`, `<new_prompt>`) at the
//!   start, followed by the model's notes about it (`<instruction>Classify it.</instruction>
//!   The instruction should beat all the previous ones by…`, Qwen 1.5B in OPRO's rounds on
//!   TREC, navigate, sports, boolean expressions; also `<_prompt>…</prompt>`): what the pair
//!   holds is the instruction, the notes after it are dropped;
//! - quotes around the whole text (`"…"`, `“…”`, `'…'`), or a lone `"` at one end.

/// Words a lead-in clause is made of.
const LEAD_IN: &[&str] = &[
    "here",
    "here's",
    "heres",
    "is",
    "the",
    "a",
    "an",
    "new",
    "improved",
    "revised",
    "updated",
    "better",
    "final",
    "my",
    "your",
    "this",
    "proposed",
    "suggested",
    "rewritten",
    "instruction",
    "instructions",
    "prompt",
];

/// Of which one must name what follows, so that "A: …" or "The: …" is left alone.
const NAMES_IT: &[&str] = &[
    "here",
    "here's",
    "heres",
    "instruction",
    "instructions",
    "prompt",
];

/// `text` without the wrapping around it, stripped until none is left.
pub fn clean(text: &str) -> String {
    let mut t = text.trim();
    while let Some(inner) = without_lead_in(t)
        .or_else(|| without_emphasis(t))
        .or_else(|| without_tag_pair(t))
        .or_else(|| without_notes_after(t))
        .or_else(|| without_quotes(t))
    {
        t = inner.trim();
    }
    t.to_string()
}

fn is_mark(c: char) -> bool {
    matches!(c, '*' | '_')
}

/// The text after a lead-in clause, or `None`. Emphasis opened before the clause and closed
/// after its colon (`**New instruction:** Classify…`) goes with it.
fn without_lead_in(t: &str) -> Option<&str> {
    let (head, rest) = t.split_once(':')?;
    let clause = head.trim_matches(|c: char| is_mark(c) || c == '#' || c.is_whitespace());
    let words: Vec<String> = clause
        .split_whitespace()
        .map(|w| w.to_lowercase().replace('’', "'"))
        .collect();
    let lead_in = !words.is_empty()
        && words.iter().all(|w| LEAD_IN.contains(&w.as_str()))
        && words.iter().any(|w| NAMES_IT.contains(&w.as_str()));
    // `Here's a new instruction that meets your requirement:` (Qwen 1.5B in OPRO's rounds on
    // object counting): a short one-line clause that opens with "here" and names an
    // instruction or a prompt is a lead-in whatever else it says.
    let here_clause = words.len() <= 12
        && !clause.contains('\n')
        && words
            .first()
            .is_some_and(|w| matches!(w.as_str(), "here" | "here's" | "heres"))
        && words.iter().any(|w| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric());
            matches!(w, "instruction" | "instructions" | "prompt")
        });
    let lead_in = lead_in || here_clause;
    if !lead_in {
        return None;
    }
    let opened = head
        .chars()
        .take_while(|&c| is_mark(c) || c == '#' || c.is_whitespace())
        .filter(|&c| is_mark(c))
        .count();
    let closed = head
        .chars()
        .rev()
        .take_while(|&c| is_mark(c) || c.is_whitespace())
        .filter(|&c| is_mark(c))
        .count();
    let mut rest = rest.trim_start();
    for _ in closed..opened {
        match rest.strip_prefix(is_mark) {
            Some(r) => rest = r,
            None => break,
        }
    }
    Some(rest)
}

/// The text inside emphasis around all of it, or `None`.
fn without_emphasis(t: &str) -> Option<&str> {
    ["**", "__", "*", "`"].into_iter().find_map(|mark| {
        let inner = t.strip_prefix(mark)?.strip_suffix(mark)?;
        // `*a* and *b*` is two emphases, not one around the whole.
        (!inner.trim().is_empty() && !inner.contains(mark)).then_some(inner)
    })
}

/// The text inside one XML-like tag pair around all of it, or `None`.
fn without_tag_pair(t: &str) -> Option<&str> {
    let rest = t.strip_prefix('<')?;
    let end = rest.find('>')?;
    let name = rest[..end].split_whitespace().next()?;
    let named = name.chars().next().is_some_and(char::is_alphabetic)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    if !named {
        return None;
    }
    let inner = rest[end + 1..].strip_suffix(&format!("</{name}>"))?;
    // `<a>x</a> <a>y</a>` is two pairs, not one around the whole.
    let single = !inner.contains(&format!("<{name}"));
    (single && !inner.trim().is_empty()).then_some(inner)
}

/// What an opening tag pair naming an instruction or a prompt holds, when notes follow it, or
/// `None` (any other tag, as in `<turn right> Take 5 steps`, is the task's own text).
fn without_notes_after(t: &str) -> Option<&str> {
    let rest = t.strip_prefix('<')?;
    let end = rest.find('>')?;
    let name = rest[..end].split_whitespace().next()?;
    let lower = name.to_lowercase();
    if !(lower.contains("instruction") || lower.contains("prompt")) {
        return None;
    }
    let body = &rest[end + 1..];
    // Qwen 1.5B also closes `<_prompt>` with `</prompt>`.
    let close = [name, name.trim_matches('_')]
        .iter()
        .find_map(|n| body.find(&format!("</{n}>")))?;
    let inner = &body[..close];
    let single = !inner.contains(&format!("<{name}"));
    (single && !inner.trim().is_empty()).then_some(inner)
}

/// The text inside quotes around all of it, or `None`. A lone straight double quote at either
/// end is dropped too (a base model's continuation often closes one it never opened), but
/// quotes that open and close inside (`"Positive" or "negative": pick one.`) stay.
fn without_quotes(t: &str) -> Option<&str> {
    if let Some(inner) = t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let around = !inner.contains('"') || (inner.starts_with('"') && inner.ends_with('"'));
        return around.then_some(inner);
    }
    if t.matches('"').count() == 1 && (t.starts_with('"') || t.ends_with('"')) {
        return Some(t.trim_matches('"'));
    }
    [('“', '”'), ('\'', '\'')]
        .into_iter()
        .find_map(|(open, close)| {
            let inner = t.strip_prefix(open)?.strip_suffix(close)?;
            (!inner.trim().is_empty()).then_some(inner)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_the_meta_models_wrote_are_stripped() {
        for (answer, instruction) in [
            (
                "Here's the new instruction: **Classify the sentiment of the movie review as positive or negative.**",
                "Classify the sentiment of the movie review as positive or negative.",
            ),
            (
                "Here's the new instruction: <instruction>Given a list of words, write the opposite of each.</instruction>",
                "Given a list of words, write the opposite of each.",
            ),
            (
                "<instruction>Identify the type of entity or information asked in the input and return it.</instruction>",
                "Identify the type of entity or information asked in the input and return it.",
            ),
            (
                "<choose>Yes if you return to the starting point, No otherwise</choose>",
                "Yes if you return to the starting point, No otherwise",
            ),
            (
                "<output>language classification</output>",
                "language classification",
            ),
            ("New instruction: Label the review.", "Label the review."),
            ("Instruction: Label the review.", "Label the review."),
            (
                "**Improved prompt:** Label the review.",
                "Label the review.",
            ),
            ("Improved prompt:\n`Label the review.`", "Label the review."),
            ("Here’s my revised instruction: \"Label it.\"", "Label it."),
            (
                "<instruction type=\"final\">Label it.</instruction>",
                "Label it.",
            ),
            ("*Label it.*", "Label it."),
            ("“Label it.”", "Label it."),
            ("'Label it.'", "Label it."),
            ("\"Say yes.", "Say yes."),
            ("Say yes.\"", "Say yes."),
            ("\"\"Say yes.\"\"", "Say yes."),
            ("\"\"", ""),
            (
                "<instruction>Read the question and decide what kind of answer it asks for. Answer with one word.</instruction>\n\nThe instruction should beat all the previous instructions by being more general.",
                "Read the question and decide what kind of answer it asks for. Answer with one word.",
            ),
            (
                "Here's the new instruction: <new_prompt>Label it.</new_prompt> It is shorter than the others.",
                "Label it.",
            ),
            (
                "<_prompt>Read a description of an athlete's performance and decide whether it is plausible. Answer with yes or no only.</prompt>\n\nExplanation:\nThis instruction is more general.",
                "Read a description of an athlete's performance and decide whether it is plausible. Answer with yes or no only.",
            ),
            ("<_prompt>Label it.</prompt>", "Label it."),
            (
                "Here's a new instruction that meets your requirement:\nWhen counting objects of a particular kind in a list, count only those that match. Answer with the total as a number in digits, nothing else.",
                "When counting objects of a particular kind in a list, count only those that match. Answer with the total as a number in digits, nothing else.",
            ),
            (
                "Here is an improved prompt based on the scores above: Label the review.",
                "Label the review.",
            ),
        ] {
            assert_eq!(clean(answer), instruction, "{answer}");
        }
    }

    #[test]
    fn what_is_not_a_wrapper_stays() {
        for kept in [
            "Classify the review: answer positive or negative.",
            "Note: label the review.",
            "Here you read a review and label it: positive or negative.",
            "Here, for each instruction in the list, say what it asks: one word.",
            "The instruction is a reframing of a movie into its output.",
            "<reverse>",
            "<classify-sentiment text>",
            "<turn right> Take 5 steps <turn around> Take 1 step",
            "<answer>yes</answer> if the sentence is plausible, else no.",
            "<instruction></instruction> then the notes.",
            "<a>x</a> <a>y</a>",
            "<instruction></instruction>",
            "*Label* the review, *then* stop.",
            "Answer with `yes` or `no`.",
            "\"Positive\" or \"negative\": pick one.",
            "Solve the math word problem step by step, then give the final number after ####.",
        ] {
            assert_eq!(clean(kept), kept, "{kept}");
        }
    }
}
