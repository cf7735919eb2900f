//! The HTML report of a run: score per round (best so far and the round's mean), calls and
//! cost per layer (cumulative) as inline SVG plots drawn by [`crate::chart::rounds`] (the same
//! plots the console draws of the run), the candidates with lineage, the verdict. One
//! self-contained file, no scripts, no network.

use std::fmt::Write as _;

use crate::run::Outcome;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report of `o` for task `task`.
pub fn html(o: &Outcome, task: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>metaprompt · {t} · {a}</title>\
         <style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}\
         div.charts{{display:flex;flex-wrap:wrap;gap:1em}}figure.chart{{margin:0 0 1em;flex:1 1 26em;max-width:640px}}\
         figure.chart figcaption{{font-weight:bold}}figure.chart svg{{width:100%;height:auto}}.note{{color:#555}}</style></head><body>\
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
    h.push_str(&crate::chart::rounds(&o.rounds).into_string());
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
