//! The HTML report of a run: score per round (best so far and the round's mean) and cost per
//! round (cumulative, per layer) as inline SVG plots, the candidates with lineage, the verdict.
//! One self-contained file, no scripts, no network.

use std::fmt::Write as _;

use crate::run::Outcome;

const W: f64 = 560.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plotted line: name, colour, points (x, y).
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// How an axis reads: scores with three decimals, counts as integers, dollars as dollars.
#[derive(Clone, Copy)]
enum Kind {
    Score,
    Count,
    Usd,
}

impl Kind {
    fn label(self, v: f64) -> String {
        match self {
            Kind::Score => format!("{v:.3}"),
            Kind::Count => format!("{}", v.round() as i64),
            Kind::Usd if v == 0.0 => "$0".into(),
            Kind::Usd if v.abs() >= 0.01 => format!("${v:.2}"),
            Kind::Usd => format!("${v:.6}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string(),
        }
    }
}

/// One line chart. A dollar chart whose every point is zero is a sentence instead.
fn chart(title: &str, y_label: &str, kind: Kind, series: &[Series<'_>]) -> String {
    let points = series.iter().map(|s| s.2.len()).sum::<usize>();
    if matches!(kind, Kind::Usd) && points == 0 {
        return format!(
            "<figure><figcaption>{}</figcaption><p>No dollar figure: some calls ran on a model without a price.</p></figure>",
            esc(title)
        );
    }
    if matches!(kind, Kind::Usd) && series.iter().all(|s| s.2.iter().all(|p| p.1 == 0.0)) {
        return format!(
            "<figure><figcaption>{}</figcaption><p>$0: every call ran on an unpriced (local) model.</p></figure>",
            esc(title)
        );
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (mut y_min, mut y_max) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    if (y_max - y_min).abs() < 1e-9 {
        y_max = y_min + 1.0_f64.max(y_min.abs() * 0.1);
    }
    let x = |v: f64| PAD + v / x_max * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - y_min) / (y_max - y_min) * (H - 2.0 * PAD);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">",
        esc(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{PAD}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#999\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{0}\" stroke=\"#999\"/>",
        H - PAD,
        W - PAD
    );
    for (v, label) in [(y_min, y_min), (y_max, y_max)] {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            PAD - 4.0,
            y(v) + 3.0,
            kind.label(label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">round</text><text x=\"12\" y=\"{}\" font-size=\"10\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">{}</text>",
        W / 2.0,
        H - 8.0,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for r in 0..=(x_max as usize) {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{r}</text>",
            x(r as f64),
            H - PAD + 14.0
        );
    }
    for (k, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(a, b) in points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {}</title></circle>",
                x(a),
                y(b),
                esc(name),
                kind.label(b)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            W - PAD - 120.0,
            PAD + 14.0 * k as f64,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// The report of `o` for task `task`.
pub fn html(o: &Outcome, task: &str) -> String {
    let best: Vec<(f64, f64)> = o.rounds.iter().map(|r| (r.round as f64, r.best)).collect();
    let mean: Vec<(f64, f64)> = o
        .rounds
        .iter()
        .filter_map(|r| r.mean.map(|m| (r.round as f64, m)))
        .collect();
    let meta_cost: Vec<(f64, f64)> = o
        .rounds
        .iter()
        .filter_map(|r| r.meta_cost_usd.map(|c| (r.round as f64, c)))
        .collect();
    let exec_cost: Vec<(f64, f64)> = o
        .rounds
        .iter()
        .filter_map(|r| r.execution_cost_usd.map(|c| (r.round as f64, c)))
        .collect();
    let calls: Vec<(f64, f64)> = o
        .rounds
        .iter()
        .map(|r| (r.round as f64, r.metric_calls as f64))
        .collect();
    let meta_calls: Vec<(f64, f64)> = o
        .rounds
        .iter()
        .map(|r| (r.round as f64, r.meta_calls as f64))
        .collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>metaprompt · {t} · {a}</title>\
         <style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         figure{{display:inline-block;margin:0 1em 1em 0}}figcaption{{font-weight:bold}}</style></head><body>\
         <h1>{t} · {a}</h1>",
        t = esc(task),
        a = esc(&o.algorithm)
    );
    let verdict = {
        let v = o.verdict();
        let mut c = v.chars();
        c.next()
            .map_or(v.clone(), |f| f.to_uppercase().chain(c).collect::<String>())
            + "."
    };
    let _ = write!(
        h,
        "<p>{}</p><p>Stopped: {}. Metric calls {} for the search (racing saved {}){} and {} for the test split, meta calls {}, wall {:.1} s.</p>",
        esc(&verdict),
        esc(o.stop.describe()),
        o.metric_calls,
        o.saved_calls,
        if o.confirm_calls > 0 {
            format!(", {} for the held-out confirmation", o.confirm_calls)
        } else {
            String::new()
        },
        o.test_calls,
        o.meta_calls,
        o.wall_secs
    );
    for line in [
        o.convergence().map(|c| format!("Convergence: {c}.")),
        o.break_even
            .as_ref()
            .map(|b| format!("Break-even: {}.", b.describe())),
    ]
    .into_iter()
    .flatten()
    {
        let _ = write!(h, "<p>{}</p>", esc(&line));
    }
    let held_out = o.confirm.as_ref().map(|c| &c.unscored);
    for (what, u) in [
        ("dev", Some(&o.unscored)),
        ("held-out dev", held_out),
        ("test", Some(&o.test_unscored)),
    ]
    .into_iter()
    .filter_map(|(w, u)| Some((w, u?)))
    {
        if u.count > 0 {
            let reasons: Vec<String> = u
                .reasons
                .iter()
                .map(|r| format!("{} ({}×)", r.reason, r.count))
                .collect();
            let _ = write!(
                h,
                "<p>Unscored on {what}: {} (left out of every mean and comparison): {}.</p>",
                u.count,
                esc(&reasons.join("; "))
            );
        }
    }
    let _ = write!(
        h,
        "<table><tr><th></th><th>dev</th><th>test</th></tr><tr><td>seed (p0)</td><td>{}</td><td>{}</td></tr><tr><td>kept ({})</td><td>{}</td><td>{}</td></tr></table>",
        est(&Some(o.seed_dev)),
        est(&o.seed_test),
        esc(&o.winner),
        est(&Some(if o.kept_seed { o.seed_dev } else { o.best_dev })),
        est(&o.winner_test),
    );
    h.push_str("<h2>Progress</h2>");
    h.push_str(&chart(
        "Score per round (dev)",
        "score",
        Kind::Score,
        &[
            ("best so far", "#1f77b4", best),
            ("candidates' mean (racing examples)", "#ff7f0e", mean),
        ],
    ));
    h.push_str(&chart(
        "Cumulative cost per layer ($)",
        "dollars",
        Kind::Usd,
        &[
            ("meta", "#d62728", meta_cost),
            ("execution", "#2ca02c", exec_cost),
        ],
    ));
    h.push_str(&chart(
        "Cumulative calls",
        "calls",
        Kind::Count,
        &[
            ("metric calls", "#9467bd", calls),
            ("meta calls", "#8c564b", meta_calls),
        ],
    ));
    h.push_str("<h2>Candidates</h2><table><tr><th>id</th><th>round</th><th>op</th><th>parents</th><th>dev mean (n)</th><th>instruction</th><th>demos</th></tr>");
    for e in &o.pool {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.id),
            e.round,
            esc(&e.op),
            esc(&e.parents.join(", ")),
            e.mean()
                .map_or("–".into(), |m| format!("{m:.3} ({})", e.scores.len())),
            esc(e.prompt.instruction.as_deref().unwrap_or("")),
            e.prompt.demos.len()
        );
    }
    h.push_str("</table>");
    if !o.rejected.is_empty() {
        h.push_str("<h2>Rejected</h2><table><tr><th>id</th><th>round</th><th>why</th><th>instruction</th></tr>");
        for r in &o.rejected {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.id),
                r.round,
                esc(&r.why.join("; ")),
                esc(r.instruction.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

fn est(e: &Option<metaprompt_eval::stats::Estimate>) -> String {
    match e {
        Some(e) => format!("{:.3} [{:.3}, {:.3}] (n = {})", e.mean, e.low, e.high, e.n),
        None => "–".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_read_as_what_they_count_and_a_free_run_says_so() {
        let free = chart(
            "cost",
            "dollars",
            Kind::Usd,
            &[("meta", "#000", vec![(1.0, 0.0), (2.0, 0.0)])],
        );
        assert!(free.contains("$0:") && !free.contains("<svg"), "{free}");
        let unpriced = chart("cost", "dollars", Kind::Usd, &[("meta", "#000", vec![])]);
        assert!(unpriced.contains("without a price"), "{unpriced}");
        let calls = chart(
            "calls",
            "calls",
            Kind::Count,
            &[("metric calls", "#000", vec![(1.0, 84.0), (2.0, 246.0)])],
        );
        assert!(calls.contains(">84<") && calls.contains(">246<"), "{calls}");
        assert!(!calls.contains("84.000"), "{calls}");
        assert_eq!(Kind::Usd.label(0.000_42), "$0.00042");
    }
}
