//! One machine, one set of cores. llama.cpp's worker threads meet at spinning barriers after
//! every step, so two computations at once, each with a thread per core (two `metaprompt`
//! processes, or two models in one: a meta model and an execution model, the server's live
//! context and an evaluation), keep descheduling each other's threads and each runs several
//! times slower than the two would one after the other (on 2 cores: two evaluations of the same
//! 30 SST-2 examples on Qwen 0.5B took 39 s each side by side, 5.6 s alone).
//!
//! So every decode takes the machine's compute turn first: an exclusive `flock` on
//! `.compute.lock` in the models folder. A lock belongs to an open file, so each model's
//! worker opens its own and the turn is shared between processes and between the models of one
//! process alike. A waiting worker sleeps in the kernel (it does not spin), and on release the
//! lock passes to it while the holder samples its next token, so computations interleave step
//! by step at the speed of one. `[local] share_cores = false` turns this off (a machine whose
//! processes are pinned to cores of their own).

use std::fs::{File, OpenOptions};
use std::path::Path;

/// The compute turn of one worker; `None` inside when sharing is off or the lock file cannot
/// be opened (then nothing is coordinated, as before).
#[derive(Debug)]
pub(crate) struct Turn(Option<File>);

impl Turn {
    /// The turn in `models_dir` (created if needed); off when `share` is false.
    pub(crate) fn open(models_dir: &Path, share: bool) -> Self {
        if !share {
            return Self(None);
        }
        let path = models_dir.join(".compute.lock");
        let file = std::fs::create_dir_all(models_dir).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
        match file {
            Ok(f) => Self(Some(f)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the compute lock; computations on this machine are not coordinated");
                Self(None)
            }
        }
    }

    /// Run `f` (one decode) holding the machine's compute turn.
    pub(crate) fn hold<T>(&self, f: impl FnOnce() -> T) -> T {
        let held = self.0.as_ref().is_some_and(|file| file.lock().is_ok());
        let out = f();
        if held && let Some(file) = &self.0 {
            let _ = file.unlock();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn two_turns_on_one_folder_never_compute_at_once_and_both_progress() {
        let dir = tempfile::tempdir().unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let done: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let inside = inside.clone();
                    let dir = dir.path().to_path_buf();
                    s.spawn(move || {
                        let turn = Turn::open(&dir, true);
                        let mut steps = 0;
                        for _ in 0..50 {
                            turn.hold(|| {
                                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                                std::thread::sleep(Duration::from_micros(200));
                                inside.fetch_sub(1, Ordering::SeqCst);
                            });
                            steps += 1;
                        }
                        steps
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(done, [50, 50]);
    }

    #[test]
    fn sharing_off_or_an_unusable_folder_coordinates_nothing() {
        assert!(Turn::open(Path::new("/nonexistent"), false).0.is_none());
        assert!(
            Turn::open(Path::new("/proc/self/no-such-dir"), true)
                .0
                .is_none()
        );
        assert_eq!(Turn(None).hold(|| 7), 7);
    }
}
