//! SVG drawn by the server: line plots whose axes say what they count (scores as fractions,
//! counts as integers, dollars as dollars, time as dates), sparklines, interval bars and the
//! version lineage. Colours and sizes are SVG attributes, never `style`, so the strict
//! Content-Security-Policy holds. Every name that reaches a chart is escaped by maud.

use chrono::{DateTime, TimeZone, Utc};
use maud::{Markup, html};
use metaprompt_registry::model::Version;

const W: f64 = 640.0;
const H: f64 = 240.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

/// Points a plot marks with a dot each, at most.
const DOTS: usize = 60;

/// Colours a person with a common colour-vision deficiency can still tell apart (Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#7a6a00", "#000000",
];

/// What an axis counts, which decides its ticks and how they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// A mean score or a rate in [0, 1].
    Score,
    /// Calls, rounds, examples: whole numbers.
    Count,
    /// US dollars.
    Usd,
    /// Seconds since the Unix epoch, read as dates.
    Time,
}

impl Axis {
    fn label(self, v: f64, span: f64) -> String {
        match self {
            Axis::Score => format!("{v:.2}"),
            Axis::Count => format!("{}", v.round() as i64),
            Axis::Usd => usd(v),
            Axis::Time => {
                let t = Utc
                    .timestamp_opt(v as i64, 0)
                    .single()
                    .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default());
                if span > 2.0 * 86_400.0 {
                    t.format("%m-%d").to_string()
                } else if span < 600.0 {
                    t.format("%H:%M:%S").to_string()
                } else {
                    t.format("%H:%M").to_string()
                }
            }
        }
    }

    /// Tick positions over `[lo, hi]` at a round step (1, 2 or 5 × 10^k; whole numbers for
    /// counts), at most about six.
    fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        let raw = (hi - lo) / 5.0;
        if !(raw.is_finite() && raw > 0.0) {
            return vec![lo];
        }
        let mut step = if self == Axis::Time {
            // Minutes, hours, days.
            [
                1.0,
                5.0,
                10.0,
                30.0,
                60.0,
                300.0,
                900.0,
                1800.0,
                3600.0,
                3.0 * 3600.0,
                6.0 * 3600.0,
                86_400.0,
                7.0 * 86_400.0,
            ]
            .into_iter()
            .find(|s| *s >= raw)
            .unwrap_or(raw)
        } else {
            let mag = 10f64.powf(raw.log10().floor());
            [1.0, 2.0, 5.0, 10.0]
                .into_iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(raw)
        };
        if self == Axis::Count {
            step = step.max(1.0).round();
        }
        let first = (lo / step).ceil() * step;
        (0..12)
            .map(|k| first + step * f64::from(k))
            .take_while(|v| *v <= hi + step * 1e-9)
            .collect()
    }
}

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

/// Dollars with as many decimals as the amount needs: `$0`, `$0.0042`, `$1.25`.
pub fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
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

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A line plot. A dollar plot whose every point is zero says so in words instead of drawing
/// an empty chart; a plot without points says there is nothing yet.
pub fn line(title: &str, x_axis: (Axis, &str), y_axis: (Axis, &str), series: &[Series]) -> Markup {
    line_over(title, None, x_axis, y_axis, series)
}

/// [`line`] over a given x range (a time window) rather than the points' own.
pub fn line_over(
    title: &str,
    x_range: Option<(f64, f64)>,
    x_axis: (Axis, &str),
    y_axis: (Axis, &str),
    series: &[Series],
) -> Markup {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let Some((mut x_lo, mut x_hi)) = bounds(points().map(|p| p.0)) else {
        return html! { figure.chart { figcaption { (title) } p.note { "Nothing to plot yet." } } };
    };
    if let Some((lo, hi)) = x_range {
        (x_lo, x_hi) = (lo.min(x_lo), hi.max(x_hi));
    }
    let (mut y_lo, mut y_hi) = bounds(points().map(|p| p.1)).unwrap_or((0.0, 1.0));
    if y_axis.0 == Axis::Usd && y_lo == 0.0 && y_hi == 0.0 {
        return html! {
            figure.chart { figcaption { (title) }
                p.note { "$0: every call in this run ran on an unpriced (local) model." } }
        };
    }
    match y_axis.0 {
        Axis::Score => {
            y_lo = 0.0;
            y_hi = y_hi.max(1.0);
        }
        Axis::Count | Axis::Usd => y_lo = y_lo.min(0.0),
        Axis::Time => {}
    }
    if y_hi - y_lo < 1e-12 {
        y_hi = y_lo + 1.0;
    }
    if x_hi - x_lo < 1e-12 {
        x_lo -= 1.0;
        x_hi += 1.0;
    }
    let px = |v: f64| LEFT + (v - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - (v - y_lo) / (y_hi - y_lo) * (H - TOP - BOTTOM);
    let x_ticks = x_axis.0.ticks(x_lo, x_hi);
    // A dot (with its value on hover) per point while that stays light; lines alone beyond.
    let dots = series.iter().map(|s| s.points.len()).sum::<usize>() <= DOTS;
    let y_ticks = y_axis.0.ticks(y_lo, y_hi);
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
                line x1=(LEFT) y1=(H - BOTTOM) x2=(W - RIGHT) y2=(H - BOTTOM) stroke="#888" {}
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) stroke="#888" {}
                @for t in &y_ticks {
                    line x1=(LEFT - 4.0) y1=(py(*t)) x2=(W - RIGHT) y2=(py(*t)) stroke="#eee" {}
                    text x=(LEFT - 6.0) y=(py(*t) + 4.0) font-size="11" text-anchor="end" {
                        (y_axis.0.label(*t, y_hi - y_lo))
                    }
                }
                @for t in &x_ticks {
                    text x=(px(*t)) y=(H - BOTTOM + 15.0) font-size="11" text-anchor="middle" {
                        (x_axis.0.label(*t, x_hi - x_lo))
                    }
                }
                text x=((LEFT + W - RIGHT) / 2.0) y=(H - 4.0) font-size="11" text-anchor="middle" { (x_axis.1) }
                text x="12" y=(H / 2.0) font-size="11" text-anchor="middle"
                    transform={ "rotate(-90 12 " (H / 2.0) ")" } { (y_axis.1) }
                @for (k, s) in series.iter().enumerate() {
                    @let colour = PALETTE[k % PALETTE.len()];
                    g.series data-series=(s.name) {
                        polyline fill="none" stroke=(colour) stroke-width="2"
                            points=(s.points.iter().map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b))).collect::<Vec<_>>().join(" ")) {}
                        @if dots { @for &(a, b) in &s.points {
                            circle cx=(format!("{:.1}", px(a))) cy=(format!("{:.1}", py(b))) r="3" fill=(colour) {
                                title { (s.name) ": " (y_axis.0.label(b, 0.0)) " at " (x_axis.0.label(a, x_hi - x_lo)) }
                            }
                        } }
                    }
                    text x=(W - RIGHT + 10.0) y=(TOP + 12.0 + 16.0 * k as f64) font-size="12" fill=(colour) {
                        (truncate(&s.name, 22))
                    }
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
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
    fn axes_read_as_what_they_count() {
        assert_eq!(Axis::Count.ticks(0.0, 3.0), vec![0.0, 1.0, 2.0, 3.0]);
        let labels = |a: Axis, lo: f64, hi: f64| -> Vec<String> {
            a.ticks(lo, hi)
                .iter()
                .map(|t| a.label(*t, hi - lo))
                .collect()
        };
        assert_eq!(labels(Axis::Usd, 0.0, 0.0029), ["$0", "$0.001", "$0.002"]);
        assert_eq!(
            labels(Axis::Score, 0.0, 1.0),
            ["0.00", "0.20", "0.40", "0.60", "0.80", "1.00"]
        );
        assert_eq!(labels(Axis::Count, 84.0, 246.0), ["100", "150", "200"]);
        assert!(
            Axis::Count
                .ticks(0.0, 190.0)
                .iter()
                .all(|t| t.fract() == 0.0)
        );
        assert_eq!(Axis::Count.label(2.0, 1.0), "2");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(0.00042), "$0.00042");
        assert_eq!(usd(1.5), "$1.50");
        assert_eq!(Axis::Score.label(0.5, 1.0), "0.50");
    }

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

    #[test]
    fn a_run_that_cost_nothing_says_so() {
        let s = [Series::new("meta", vec![(0.0, 0.0), (1.0, 0.0)])];
        let html = line("cost", (Axis::Count, "round"), (Axis::Usd, "dollars"), &s).into_string();
        assert!(!html.contains("<svg") && html.contains("$0"), "{html}");
        let s = [Series::new("<b>x</b>", vec![(0.0, 0.2), (1.0, 0.4)])];
        let html = line("score", (Axis::Count, "round"), (Axis::Score, "mean"), &s).into_string();
        assert!(
            html.contains("<svg") && html.contains("data-series=\"&lt;b&gt;x&lt;/b&gt;\""),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
    }
}
