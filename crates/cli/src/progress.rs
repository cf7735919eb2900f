//! Progress bars on standard error (hidden when it is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use metaprompt_local::fetch::Progress;

#[derive(Debug)]
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Self(bar)
    }
}

impl Progress for Bar {
    fn phase(&self, message: &str) {
        self.0.suspend(|| eprintln!("{message}"));
    }
    fn start(&self, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_style(
            ProgressStyle::with_template(
                "  {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
