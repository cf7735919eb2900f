//! Line plots as inline SVG, one engine for every page that draws one: report.html (written
//! at the end of a run) and the web console (a run while it runs, production over time) draw
//! the same run with the same [`rounds`]. Axes say what they count (scores as fractions,
//! counts as integers, dollars as dollars, time as dates). Colours and sizes are SVG
//! attributes, never `style`, so the console's strict Content-Security-Policy holds; every name
//! that reaches a plot is escaped by maud.

use std::borrow::Borrow;

use chrono::{DateTime, TimeZone, Utc};
use maud::{Markup, html};
use metaprompt_llm::pricing::usd;

use crate::run::RoundStats;

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

/// `s` cut to `n` characters, with `…` where it was cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The three plots of a run, one per [`RoundStats`]: the score per round (the best on the
/// full dev split and the round's mean), the calls per layer and the cost per layer, both
/// cumulative. A run with a call on an unpriced model says so instead of a dollar plot.
pub fn rounds<R: Borrow<RoundStats>>(rounds: &[R]) -> Markup {
    let rounds: Vec<&RoundStats> = rounds.iter().map(Borrow::borrow).collect();
    let series = |f: &dyn Fn(&RoundStats) -> Option<f64>| -> Vec<(f64, f64)> {
        rounds
            .iter()
            .filter_map(|s| f(s).map(|y| (s.round as f64, y)))
            .collect()
    };
    let score = [
        Series::new("best (dev)", series(&|s| Some(s.best))),
        Series::new("candidates' mean (racing examples)", series(&|s| s.mean)),
    ];
    let calls = [
        Series::new("metric calls", series(&|s| Some(s.metric_calls as f64))),
        Series::new("meta calls", series(&|s| Some(s.meta_calls as f64))),
    ];
    let cost = [
        Series::new("meta layer", series(&|s| s.meta_cost_usd)),
        Series::new("execution layer", series(&|s| s.execution_cost_usd)),
    ];
    let unpriced = rounds
        .iter()
        .any(|s| s.meta_cost_usd.is_none() || s.execution_cost_usd.is_none());
    let round = (Axis::Count, "round");
    html! {
        div.charts {
            (line("Score per round (best: full dev split; mean: the round's minibatch)", round, (Axis::Score, "score"), &score))
            (line("Calls per layer (cumulative)", round, (Axis::Count, "calls"), &calls))
            @if unpriced { figure.chart { figcaption { "Cost per layer" } p.note { "Some calls ran on a model without a price: no dollar figure." } } }
            @else { (line("Cost per layer (cumulative)", round, (Axis::Usd, "dollars"), &cost)) }
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
        assert_eq!(Axis::Usd.label(0.000_42, 0.001), "$0.00042");
        assert_eq!(Axis::Score.label(0.5, 1.0), "0.50");
    }

    #[test]
    fn a_run_that_cost_nothing_says_so_and_names_are_escaped() {
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

    fn round(k: usize, cost: Option<f64>) -> RoundStats {
        RoundStats {
            round: k,
            temperature: 0.7,
            proposed: 2,
            rejected: 0,
            best: 0.5 + 0.1 * k as f64,
            best_id: format!("p{k}"),
            mean: Some(0.4),
            metric_calls: 84 * (k as u64 + 1),
            meta_calls: 2 * k as u64,
            meta_cost_usd: cost,
            execution_cost_usd: cost,
            wall_secs: 1.0,
            unscored: 0,
        }
    }

    #[test]
    fn a_run_draws_three_plots_and_an_unpriced_one_says_so() {
        let html = rounds(&[round(0, Some(0.0)), round(1, Some(0.002))]).into_string();
        assert_eq!(html.matches("<svg").count(), 3, "{html}");
        assert!(html.contains(">84<") || html.contains(">100<"), "{html}");
        let html = rounds(&[round(0, None), round(1, None)]).into_string();
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert!(html.contains("without a price"), "{html}");
    }
}
