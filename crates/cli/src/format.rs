//! Small formatting helpers for human-readable output.

use std::time::Duration;

/// Dollars as every output writes them ([`metaprompt_llm::pricing::usd`]: `$0.00012`,
/// `$1.23`, `$0`), or `cost unknown` where a call ran on a model without a price.
pub fn cost(cost: Option<f64>) -> String {
    cost.map_or_else(|| "cost unknown".to_string(), metaprompt_llm::pricing::usd)
}

/// A summary's mean and 95% interval (`0.850 [0.795, 0.900]`), or `none scored` when no
/// example was (a mean of nothing is not 0).
pub fn score(s: &metaprompt_eval::Summary) -> String {
    if s.scored() == 0 {
        format!("none scored ({} unscored)", s.examples)
    } else {
        format!(
            "{:.3} [{:.3}, {:.3}]",
            s.score.mean, s.score.low, s.score.high
        )
    }
}

pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Print a line to standard output. A closed pipe (`metaprompt … | head`) ends the program
/// quietly, as Unix tools do, instead of panicking like `println!`.
pub fn line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::format::line(format_args!($($arg)*)) };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(cost(None), "cost unknown");
        assert_eq!(cost(Some(0.0)), "$0");
        assert_eq!(cost(Some(0.0000089)), "$0.000009");
        assert_eq!(cost(Some(1.5)), "$1.50");
        assert_eq!(duration(Duration::from_millis(412)), "412 ms");
        assert_eq!(duration(Duration::from_millis(1500)), "1.50 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
