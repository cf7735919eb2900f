//! What every way of generating text shares (the canonical procedure in `batch`, the `lanes`,
//! the `live` path): the [`Sampler`] that picks each token, and the [`Output`] that turns the
//! picked tokens into text, ends it at a stop sequence and hands out what can be streamed.

use llama_cpp_2::token::LlamaToken;
use metaprompt_llm::Request;
use rand::SeedableRng;
use rand::distr::{Distribution, weighted::WeightedIndex};

/// Greedy at temperature 0; otherwise sampling from the tempered distribution with a seed taken
/// from the request (its seed mixed with the sample index), so each sample is reproducible.
pub(crate) struct Sampler {
    temperature: f32,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub(crate) fn new(request: &Request) -> Self {
        let seed = request
            .effective_seed()
            .unwrap_or(0x5EED_0000 ^ u64::from(request.sample));
        Self {
            temperature: request.temperature,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub(crate) fn pick(&mut self, logits: &[f32]) -> LlamaToken {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = f64::from(self.temperature);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights = logits.iter().map(|&x| (f64::from(x - max) / t).exp());
        match WeightedIndex::new(weights) {
            Ok(dist) => LlamaToken(dist.sample(&mut self.rng) as i32),
            Err(_) => argmax(logits),
        }
    }
}

/// The most likely token.
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    LlamaToken(best as i32)
}

/// The text of a generation as its tokens arrive: bytes become text, a stop sequence ends it,
/// and [`Output::ready`] gives what can be shown before the generation ends.
#[derive(Debug, Default)]
pub(crate) struct Output {
    bytes: Vec<u8>,
    text: String,
    /// Bytes of `text` already handed out by `ready`.
    sent: usize,
}

impl Output {
    /// Add a token's bytes. True when a stop sequence appeared: the text ends before it.
    pub(crate) fn push(&mut self, piece: &[u8], stop: &[String]) -> bool {
        self.bytes.extend_from_slice(piece);
        self.text = String::from_utf8_lossy(&self.bytes).into_owned();
        match stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
            Some(cut) => {
                self.text.truncate(cut);
                true
            }
            None => false,
        }
    }

    /// Text not handed out yet that no later token can change: whole characters only (a
    /// token may end inside one), and not a tail that could be the start of a stop sequence.
    pub(crate) fn ready(&mut self, stop: &[String]) -> Option<String> {
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let mut end = valid.min(self.text.len());
        let held = stop
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(move |(k, _)| &s[..k]))
            .filter(|prefix| self.text[..end].ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        end -= held;
        if end <= self.sent {
            return None;
        }
        let piece = self.text[self.sent..end].to_string();
        self.sent = end;
        Some(piece)
    }

    /// What `ready` has not handed out, once the generation is over.
    pub(crate) fn rest(&mut self) -> Option<String> {
        let piece = self
            .text
            .get(self.sent..)
            .filter(|p| !p.is_empty())?
            .to_string();
        self.sent = self.text.len();
        Some(piece)
    }

    pub(crate) fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::Output;

    fn stream(pieces: &[&[u8]], stop: &[&str]) -> (Vec<String>, String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut out = Output::default();
        let mut sent = Vec::new();
        let mut stopped = false;
        for p in pieces {
            if out.push(p, &stop) {
                stopped = true;
                break;
            }
            sent.extend(out.ready(&stop));
        }
        sent.extend(out.rest());
        (sent, out.into_text(), stopped)
    }

    #[test]
    fn pieces_add_up_to_the_text_and_never_split_a_character() {
        // "é" is two bytes; a token may end between them.
        let (sent, text, _) = stream(&[b"caf", b"\xc3", b"\xa9 ok"], &[]);
        assert_eq!(text, "café ok");
        assert_eq!(sent.concat(), text);
        assert_eq!(sent, ["caf", "é ok"]);
    }

    #[test]
    fn a_possible_stop_sequence_is_held_back_until_it_is_decided() {
        let (sent, text, stopped) = stream(&[b"yes", b"\n", b"Q", b":"], &["\nQ:"]);
        assert!(stopped);
        assert_eq!(text, "yes");
        assert_eq!(
            sent.concat(),
            "yes",
            "{sent:?}: the stop's start was never sent"
        );
        // Not a stop after all: the held-back text goes out.
        let (sent, text, stopped) = stream(&[b"yes", b"\n", b"no"], &["\nQ:"]);
        assert!(!stopped);
        assert_eq!(text, "yes\nno");
        assert_eq!(sent, ["yes", "\nno"]);
    }
}
