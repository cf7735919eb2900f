//! What a pass is doing, as it does it: one line per stage (reading the log, a case's
//! collection, diagnosis, each search round with its calls and time, each held-out check),
//! to a sink the caller gives (`metaprompt agent --once` prints them to stderr).

use std::sync::{Arc, Mutex};
use std::time::Instant;

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a pass reports its stages; the default reports nowhere.
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<Sink>,
    /// When the current pass began.
    started: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sink.is_some() {
            "Progress(on)"
        } else {
            "Progress(off)"
        })
    }
}

impl Progress {
    /// Report each stage to `sink`, prefixed with the time since the pass began.
    pub fn to(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            sink: Some(Arc::new(sink)),
            started: Arc::default(),
        }
    }

    /// Start the clock (at the beginning of a pass).
    pub(crate) fn start(&self) {
        *self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Report `what` (a pass's stage, or its caller's own line about the pass).
    pub fn say(&self, what: &str) {
        if let Some(sink) = &self.sink {
            let started = *self
                .started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let secs = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            sink(&format!("[{secs:>6.1}s] {what}"));
        }
    }

    /// A search's engine event, in a line where it says something about the pass.
    pub(crate) fn event(&self, case: &str, p: &metaprompt_engine::Progress) {
        use metaprompt_engine::Progress as P;
        match p {
            P::Round { stats } => self.say(&format!(
                "{case}: search round {} · best {:.3} · {} metric + {} meta calls so far · \
                 {:.0}s in the search",
                stats.round, stats.best, stats.metric_calls, stats.meta_calls, stats.wall_secs
            )),
            P::Step { text } if text.starts_with("resuming") => {
                self.say(&format!("{case}: {text}"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_reach_the_sink_with_the_time_since_the_pass_began() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = lines.clone();
        let p = Progress::to(move |s| seen.lock().unwrap().push(s.to_string()));
        p.start();
        p.say("reading the log");
        Progress::default().say("nowhere");
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("s] reading the log"), "{lines:?}");
    }
}
