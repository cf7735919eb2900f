//! The console's own marks (sparklines, interval bars, the version lineage) and how its pages
//! word counts and costs. Line plots come from the one plot engine that report.html uses too
//! ([`metaprompt_optimize::chart`], re-exported here); dollars from
//! [`metaprompt_llm::pricing::usd`]. Colours and sizes are SVG attributes, never `style`, so
//! the strict Content-Security-Policy holds. Every name that reaches a chart is escaped by maud.

use maud::{Markup, html};
pub use metaprompt_llm::pricing::usd;
pub use metaprompt_optimize::chart::{Axis, PALETTE, Series, line, line_over, rounds, truncate};
use metaprompt_registry::model::Version;

/// `1 candidate`, `2 candidates`: a count with its noun in the right number.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A cost as every page words it: `unpriced` where a call ran on a model without a price
/// (never `$0`: unknown is not free), `no calls` where nothing ran (a layer that did no work
/// costs nothing whatever its model), else dollars. `calls` is `None` where not known.
pub fn cost(cost: Option<f64>, calls: Option<u64>) -> String {
    match (cost, calls) {
        (_, Some(0)) => "no calls".into(),
        (None, _) => "unpriced".into(),
        (Some(c), _) => usd(c),
    }
}

/// A run's candidates as the CLI's `optimize` summary counts them: those evaluated (the
/// pool, the seed included) and those rejected before evaluation, apart.
pub fn candidates(evaluated: usize, rejected: usize) -> String {
    format!(
        "{}, {} rejected",
        plural(evaluated, "candidate", "candidates"),
        rejected
    )
}

/// A small trend line of rates in [0, 1] (`None`: no outcome that day).
pub fn spark(values: &[Option<f64>]) -> Markup {
    let (w, h) = (84.0, 20.0);
    let step = w / (values.len().max(2) - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .filter_map(|(k, v)| {
            v.map(|v| format!("{:.1},{:.1}", k as f64 * step, h - 2.0 - v * (h - 4.0)))
        })
        .collect();
    html! {
        svg.spark viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) role="img"
            aria-label="outcome rate per day" {
            line x1="0" y1=(h - 2.0) x2=(w) y2=(h - 2.0) stroke="#ddd" {}
            @if points.len() > 1 {
                polyline fill="none" stroke=(PALETTE[0]) stroke-width="1.5" points=(points.join(" ")) {}
            } @else if let Some(p) = points.first() {
                @let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                circle cx=(x) cy=(y) r="2" fill=(PALETTE[0]) {}
            }
        }
    }
}

/// A mean with its interval on `[lo, hi]` (a zero line when the scale crosses zero).
pub fn interval(mean: f64, low: f64, high: f64, scale: (f64, f64)) -> Markup {
    let (w, h) = (140.0, 16.0);
    let x = |v: f64| ((v - scale.0) / (scale.1 - scale.0)).clamp(0.0, 1.0) * (w - 8.0) + 4.0;
    html! {
        svg.bar viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) role="img"
            aria-label={ (format!("{mean:.3}")) " [" (format!("{low:.3}")) ", " (format!("{high:.3}")) "]" } {
            line x1="4" y1=(h / 2.0) x2=(w - 4.0) y2=(h / 2.0) stroke="#eee" stroke-width="6" {}
            @if scale.0 < 0.0 && scale.1 > 0.0 {
                line x1=(x(0.0)) y1="1" x2=(x(0.0)) y2=(h - 1.0) stroke="#999" {}
            }
            line x1=(x(low)) y1=(h / 2.0) x2=(x(high)) y2=(h / 2.0) stroke=(PALETTE[0]) stroke-width="4" {}
            circle cx=(x(mean)) cy=(h / 2.0) r="4" fill=(PALETTE[3]) {}
        }
    }
}

fn origin_colour(v: &Version) -> &'static str {
    use metaprompt_registry::model::Origin;
    if v.author == "agent" {
        return PALETTE[4];
    }
    match v.origin {
        Origin::Human | Origin::Import => PALETTE[7],
        Origin::Generate => PALETTE[2],
        Origin::Optimize => PALETTE[0],
        Origin::Translate => PALETTE[1],
    }
}

/// What made a version, as the console names it (`agent` for the agent's proposals).
pub fn origin_name(v: &Version) -> &'static str {
    if v.author == "agent" {
        "agent"
    } else {
        v.origin.as_str()
    }
}

/// Versions top to bottom in order, each linked to its parents by an arc on the left.
/// Characters of a lineage label that fit the drawing (560 wide, labels from x = 86, about
/// 7 px a character at 13 px); the whole label is the node's tooltip.
const LINEAGE_CHARS: usize = 64;

fn lineage_label(v: &Version) -> String {
    let mut s = format!("v{} · {} · {}", v.seq, origin_name(v), v.author);
    if v.review != metaprompt_registry::model::ReviewState::None {
        s.push_str(" · ");
        s.push_str(v.review.as_str());
    }
    if let Some(m) = &v.message {
        s.push_str(" — ");
        s.push_str(m.lines().next().unwrap_or_default());
    }
    s
}

pub fn lineage(versions: &[Version]) -> Markup {
    let row = 28.0;
    let x0 = 70.0;
    let h = row * versions.len() as f64 + 12.0;
    let y = |k: usize| 16.0 + row * k as f64;
    let index = |hash: &str| versions.iter().position(|v| v.hash == hash);
    html! {
        svg.lineage viewBox={ "0 0 560 " (h) } role="img" aria-label="version lineage" {
            @for (k, v) in versions.iter().enumerate() {
                @for p in v.parents.iter().filter_map(|p| index(p)) {
                    @let bend = x0 - 14.0 - 6.0 * (k.abs_diff(p) as f64).min(8.0);
                    path fill="none" stroke="#999" stroke-width="1.5"
                        d=(format!("M{x0},{:.1} C{bend:.1},{:.1} {bend:.1},{:.1} {x0},{:.1}", y(p), y(p), y(k), y(k))) {}
                }
            }
            @for (k, v) in versions.iter().enumerate() {
                a href={ "#v" (v.seq) } {
                    circle cx=(x0) cy=(y(k)) r="7" fill=(origin_colour(v)) {
                        title { "v" (v.seq) " · " (origin_name(v)) " · " (v.review.as_str()) }
                    }
                    @let full = lineage_label(v);
                    text x=(x0 + 16.0) y=(y(k) + 4.0) font-size="13" {
                        title { (full) }
                        (truncate(&full, LINEAGE_CHARS))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_costs_read_one_way() {
        assert_eq!(plural(1, "candidate", "candidates"), "1 candidate");
        assert_eq!(plural(0, "candidate", "candidates"), "0 candidates");
        assert_eq!(candidates(2, 1), "2 candidates, 1 rejected");
        assert_eq!(candidates(1, 0), "1 candidate, 0 rejected");
        assert_eq!(cost(None, Some(3)), "unpriced");
        assert_eq!(cost(Some(0.0), Some(0)), "no calls");
        assert_eq!(cost(None, Some(0)), "no calls");
        assert_eq!(cost(Some(0.0), Some(4)), "$0");
        assert_eq!(cost(Some(0.00042), None), "$0.00042");
    }
}
