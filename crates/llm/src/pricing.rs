//! Prices per million tokens, and the cost of one response.
//!
//! A small built-in table covers a few widely used hosted models so that costs show up without
//! any configuration; prices change, so `[models."provider:model"].pricing` in `metaprompt.toml`
//! always wins. A model with no known price reports its cost as unknown (`None`), never as free.

use serde::{Deserialize, Serialize};

use crate::types::Usage;

/// Dollars as every output of metaprompt writes them (the CLI, the console, report.html), with
/// as many decimals as the amount needs: `$0`, `$0.00042`, `$0.042`, `$1.25`; a cost too small
/// for six decimals is `<$0.000001`, never `$0` (which means nothing was spent).
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v.abs() < 0.000_000_5 {
        "<$0.000001".into()
    } else if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else if v.abs() >= 0.01 {
        format!("${v:.3}")
    } else {
        format!("${v:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    pub output_per_mtok: f64,
    /// Input tokens read from the provider's prompt cache; defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
}

impl Pricing {
    pub const FREE: Pricing = Pricing {
        input_per_mtok: 0.0,
        output_per_mtok: 0.0,
        cached_input_per_mtok: None,
    };

    /// Cost in dollars of one call's usage.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage
            .cached_input_tokens
            .unwrap_or(0)
            .min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let cached_rate = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        (fresh as f64 * self.input_per_mtok
            + cached as f64 * cached_rate
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }

    /// The built-in price of `provider:model`, if the table knows it. Dated model names
    /// (`gpt-4o-mini-2024-07-18`) match their undated entry.
    pub fn builtin(provider_kind: &str, model: &str) -> Option<Pricing> {
        BUILTIN
            .iter()
            .filter(|(kind, prefix, ..)| *kind == provider_kind && model.starts_with(prefix))
            // The longest matching prefix wins (`gpt-4o-mini` before `gpt-4o`).
            .max_by_key(|(_, prefix, ..)| prefix.len())
            .map(|&(_, _, input, output, cached)| Pricing {
                input_per_mtok: input,
                output_per_mtok: output,
                cached_input_per_mtok: cached,
            })
    }
}

/// (provider kind, model name prefix, input $/Mtok, output $/Mtok, cached input $/Mtok), from the
/// providers' public price lists. Override in config when they change.
const BUILTIN: &[(&str, &str, f64, f64, Option<f64>)] = &[
    ("openai", "gpt-4o-mini", 0.15, 0.60, Some(0.075)),
    ("openai", "gpt-4o", 2.50, 10.00, Some(1.25)),
    ("openai", "gpt-4.1-nano", 0.10, 0.40, Some(0.025)),
    ("openai", "gpt-4.1-mini", 0.40, 1.60, Some(0.10)),
    ("openai", "gpt-4.1", 2.00, 8.00, Some(0.50)),
    ("openai", "gpt-3.5-turbo", 0.50, 1.50, None),
    ("anthropic", "claude-3-5-haiku", 0.80, 4.00, Some(0.08)),
    ("anthropic", "claude-3-haiku", 0.25, 1.25, Some(0.03)),
    ("anthropic", "claude-3-5-sonnet", 3.00, 15.00, Some(0.30)),
    ("anthropic", "claude-3-7-sonnet", 3.00, 15.00, Some(0.30)),
    ("anthropic", "claude-sonnet-4", 3.00, 15.00, Some(0.30)),
    ("anthropic", "claude-opus-4", 15.00, 75.00, Some(1.50)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_read_with_the_decimals_the_amount_needs() {
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(0.00045), "$0.00045");
        assert_eq!(usd(0.000_000_4), "<$0.000001");
        assert_eq!(usd(0.000_004), "$0.000004");
        assert_eq!(usd(0.0104), "$0.010");
        assert_eq!(usd(0.25), "$0.250");
        assert_eq!(usd(1.5), "$1.50");
        assert_eq!(usd(1234.567), "$1234.57");
    }

    #[test]
    fn cost_counts_cached_input_at_its_own_rate() {
        let p = Pricing {
            input_per_mtok: 1.0,
            output_per_mtok: 4.0,
            cached_input_per_mtok: Some(0.5),
        };
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_input_tokens: Some(200_000),
        };
        let cost = p.cost(&u);
        assert!((cost - (0.8 + 0.1 + 2.0)).abs() < 1e-12, "{cost}");
    }

    #[test]
    fn builtin_prefers_longest_prefix() {
        let mini = Pricing::builtin("openai", "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.input_per_mtok, 0.15);
        assert_eq!(
            Pricing::builtin("openai", "gpt-4o").unwrap().input_per_mtok,
            2.5
        );
        assert!(Pricing::builtin("openai", "my-finetune").is_none());
        assert!(Pricing::builtin("anthropic", "gpt-4o").is_none());
    }
}
