//! Detection delay of the monitor: after one slice's pass rate drops, how many of that slice's
//! feedback events arrive before a pass reports it, by effect size and traffic.
//!
//! Simulated traffic: one prompt, 10 topics, each with `traffic` scored outcomes per hour at a
//! pass rate of 0.8; at t = 2 h topic t0 drops to `0.8 − effect`. The monitor (the default
//! policy: 1 h windows, min_n 30, fdr 0.05, min_drop 0.05) runs a pass every 6 minutes; the
//! delay is the number of t0 outcomes after the drop until the first pass with a finding on
//! t0 (and the minutes since the drop). Median and 90th percentile over 40 seeds; "—" when
//! fewer than half detected it within 4 h.
//!
//! `cargo bench -p metaprompt-agent --bench detection`

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use metaprompt_agent::monitor::{Outcome, Policy, Slice, detect, report};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOPICS: usize = 10;
const SEEDS: u64 = 40;

fn delay(effect: f64, traffic: usize, seed: u64, policy: &Policy) -> Option<(usize, i64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let change = t0 + Duration::hours(2);
    let end = change + Duration::hours(4);
    let gap = Duration::milliseconds((3_600_000 / traffic) as i64);
    let mut outcomes = Vec::new();
    for t in 0..TOPICS {
        let mut at = t0 + Duration::milliseconds(rng.random_range(0..gap.num_milliseconds()));
        while at < end {
            let rate = if t == 0 && at >= change {
                0.8 - effect
            } else {
                0.8
            };
            outcomes.push(Outcome {
                prompt: "support".into(),
                seq: 1,
                at,
                tags: BTreeMap::from([("topic".into(), format!("t{t}"))]),
                score: f64::from(u8::from(rng.random_bool(rate))),
            });
            at += gap;
        }
    }
    outcomes.sort_by_key(|o| o.at);
    let target = Slice::Tag {
        key: "topic".into(),
        value: "t0".into(),
    };
    let mut now = change + Duration::minutes(6);
    while now <= end {
        let seen: Vec<Outcome> = outcomes.iter().filter(|o| o.at < now).cloned().collect();
        let findings = detect(&report(&seen, now, policy), policy);
        if findings.iter().any(|f| f.slice == target) {
            let after = seen
                .iter()
                .filter(|o| o.at >= change && o.tags["topic"] == "t0")
                .count();
            return Some((after, (now - change).num_minutes()));
        }
        now += Duration::minutes(6);
    }
    None
}

fn main() {
    let policy = Policy::default();
    let effects = [0.1, 0.2, 0.3, 0.4];
    let traffics = [60, 120, 240, 480];
    println!(
        "feedback events on the failing slice until detection: median / p90 (median minutes), {SEEDS} seeds"
    );
    print!("{:<28}", "drop in pass rate ↓ traffic →");
    for t in traffics {
        print!("{:>22}", format!("{t}/h per slice"));
    }
    println!();
    for effect in effects {
        print!("{:<28}", format!("0.8 → {:.1}", 0.8 - effect));
        for traffic in traffics {
            let found: Vec<(usize, i64)> = (0..SEEDS)
                .filter_map(|s| delay(effect, traffic, s, &policy))
                .collect();
            let cell = if found.len() * 2 < SEEDS as usize {
                "—".to_string()
            } else {
                let mut events: Vec<usize> = found.iter().map(|d| d.0).collect();
                let mut minutes: Vec<i64> = found.iter().map(|d| d.1).collect();
                events.sort_unstable();
                minutes.sort_unstable();
                let q = |n: usize, p: f64| ((n - 1) as f64 * p).round() as usize;
                format!(
                    "{} / {} ({} min)",
                    events[q(events.len(), 0.5)],
                    events[q(events.len(), 0.9)],
                    minutes[q(minutes.len(), 0.5)]
                )
            };
            print!("{cell:>22}");
        }
        println!();
    }
}
