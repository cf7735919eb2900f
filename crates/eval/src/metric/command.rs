//! `command`: any program scores the output. The runner gives it the example and the output
//! as JSON on stdin, with a clean environment and a timeout, and reads its score (and feedback)
//! from stdout; [`CommandFailure`] says how a run failed.

use std::io::ErrorKind;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    BuildError, COMMAND_ENV, CommandOptions, DEFAULT_COMMAND_TIMEOUT, Metric, MetricError,
    MetricKind, Score, check_range,
};
use crate::dataset::Example;

/// How the program of a `command` metric failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailure {
    #[error("cannot be run: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("could not be given its input or read: {0}")]
    Io(#[source] std::io::Error),
    #[error(
        "did not finish within {0:?}, so it was killed (raise `timeout_secs` if it needs longer)"
    )]
    Timeout(Duration),
    #[error("exited with {status}: {stderr}")]
    Exit { status: ExitStatus, stderr: String },
    #[error(
        "printed {stdout:?} ({reason}); expected {{\"score\": x, \"feedback\": \"…\"}} or a number on stdout"
    )]
    Answer { stdout: String, reason: String },
    #[error("gave the score {0}, outside [0, 1]")]
    OutOfRange(f64),
}

/// Any program: example and output as JSON on stdin, score (and feedback) on stdout. It runs
/// with a clean environment ([`COMMAND_ENV`] plus the task's `env`) and is killed when it takes
/// longer than its timeout. Each failure is an error, never a score of 0.
#[derive(Debug)]
pub(super) struct CustomCommand {
    command: Vec<String>,
    timeout: Duration,
    /// The variables passed on, when set here.
    env: Vec<String>,
}

impl CustomCommand {
    pub(super) fn new(options: &CommandOptions) -> Result<Self, BuildError> {
        if options.command.is_empty() {
            return Err(BuildError::EmptyCommand);
        }
        let timeout = match options.timeout_secs {
            Some(secs) => {
                let secs = check_range(MetricKind::Command, "timeout_secs", secs, true)?;
                Duration::try_from_secs_f64(secs).map_err(|_| BuildError::OutOfRange {
                    kind: MetricKind::Command,
                    field: "timeout_secs",
                    expected: "a number of seconds that fits a duration",
                    value: secs,
                })?
            }
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        if let Some(bad) = options
            .env
            .iter()
            .find(|n| n.is_empty() || n.contains(['=', '\0']))
        {
            return Err(BuildError::EnvName(bad.clone()));
        }
        let mut env: Vec<String> = COMMAND_ENV.iter().map(|n| n.to_string()).collect();
        for name in &options.env {
            if !env.contains(name) {
                env.push(name.clone());
            }
        }
        Ok(Self {
            command: options.command.clone(),
            timeout,
            env,
        })
    }

    fn fail(&self, failure: CommandFailure) -> MetricError {
        MetricError::Command {
            command: shell_words(&self.command),
            failure,
        }
    }

    /// Runs the program once on `input`; its stdout.
    async fn run(&self, input: Vec<u8>) -> Result<String, CommandFailure> {
        let mut command = tokio::process::Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Also when this future is dropped (a cancelled evaluation).
            .kill_on_drop(true);
        for name in &self.env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let mut child = command.spawn().map_err(CommandFailure::Spawn)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let exchange = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    match stdin.write_all(&input).await {
                        // A program may score without reading all of its input.
                        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            };
            let (_, out, err) = tokio::try_join!(write, read_all(stdout), read_all(stderr))?;
            Ok::<_, std::io::Error>((child.wait().await?, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        let (status, out, err) = match outcome {
            Ok(done) => done.map_err(CommandFailure::Io)?,
            Err(_) => {
                // Killed and reaped; an error here means it has just exited by itself.
                let _ = child.kill().await;
                return Err(CommandFailure::Timeout(self.timeout));
            }
        };
        if !status.success() {
            return Err(CommandFailure::Exit {
                status,
                stderr: tail(String::from_utf8_lossy(&err).trim(), 2000),
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> String {
    let skip = text.chars().count().saturating_sub(max);
    match skip {
        0 => text.to_string(),
        _ => format!("…{}", text.chars().skip(skip).collect::<String>()),
    }
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A command as one would type it: `python3 score.py 'two words'`.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_alphanumeric() || "-_./:=@%+,".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The program's answer: `{"score": x, "feedback": "…"}` or a bare number, in [0, 1].
fn parse_answer(stdout: &str) -> Result<Score, CommandFailure> {
    #[derive(Deserialize)]
    struct Answer {
        score: f64,
        #[serde(default)]
        feedback: Option<String>,
    }
    let text = stdout.trim();
    let score = match text.parse::<f64>() {
        Ok(value) => Score {
            value,
            feedback: None,
        },
        Err(_) => {
            let answer: Answer =
                serde_json::from_str(text).map_err(|e| CommandFailure::Answer {
                    stdout: clip(text, 500),
                    reason: e.to_string(),
                })?;
            Score {
                value: answer.score,
                feedback: answer.feedback,
            }
        }
    };
    if (0.0..=1.0).contains(&score.value) {
        Ok(score)
    } else {
        Err(CommandFailure::OutOfRange(score.value))
    }
}

#[async_trait]
impl Metric for CustomCommand {
    fn name(&self) -> &str {
        "command"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let input = json!({"example": {"id": example.id, "vars": example.vars, "expected": example.expected}, "output": output});
        let stdout = self
            .run(input.to_string().into_bytes())
            .await
            .map_err(|f| self.fail(f))?;
        parse_answer(&stdout).map_err(|f| self.fail(f))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::metric::tests::{command, ex, metric, v};
    use crate::metric::{MetricConfig, MetricSpec};

    async fn command_error(options: CommandOptions) -> String {
        let m = metric(MetricSpec::Command(options).into());
        let e = m.score(&ex("x"), "y").await.unwrap_err();
        assert!(matches!(e, MetricError::Command { .. }), "{e:?}");
        e.to_string()
    }

    #[tokio::test]
    async fn custom_command() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("score.py");
        std::fs::write(
            &script,
            "import json, sys\nd = json.load(sys.stdin)\nok = d['output'].strip() == d['example']['expected']\nprint(json.dumps({'score': 1.0 if ok else 0.0, 'feedback': 'checked ' + d['example']['id']}))\n",
        )
        .unwrap();
        let m = metric(MetricConfig::command([
            "python3".to_string(),
            script.display().to_string(),
        ]));
        let s = m.score(&ex("yes"), " yes ").await.unwrap();
        assert_eq!((s.value, s.feedback.as_deref()), (1.0, Some("checked t:1")));
        assert_eq!(m.score(&ex("yes"), "no").await.unwrap().value, 0.0);
        let bare = metric(MetricConfig::command(["sh", "-c", "echo 0.25"]));
        assert_eq!(v(&bare, "x", "y").await, 0.25);
    }

    /// Whatever goes wrong with the program is an error (the output is then unscored), not a
    /// score of 0.
    #[tokio::test]
    async fn command_failures_are_errors() {
        let e = command_error(command(&["python3", "-c", "print('lots')"])).await;
        assert!(
            e.contains("expected {\"score\"") && e.contains("\"lots\""),
            "{e}"
        );
        let e = command_error(command(&["python3", "-c", "print(1.5)"])).await;
        assert!(e.contains("outside [0, 1]"), "{e}");
        let e = command_error(command(&["python3", "-c", "print('nan')"])).await;
        assert!(e.contains("outside [0, 1]"), "{e}");
        let e = command_error(command(&["sh", "-c", "echo broken >&2; exit 3"])).await;
        assert!(
            e.contains("`sh -c 'echo broken >&2; exit 3'` exited with")
                && e.contains("3")
                && e.contains("broken"),
            "{e}"
        );
        let e = command_error(command(&["/nonexistent/scorer"])).await;
        assert!(e.contains("`/nonexistent/scorer` cannot be run"), "{e}");
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut options = command(&["sh", "-c", "echo $$ > \"$0\"; exec sleep 30"]);
        options.command.push(pid_file.display().to_string());
        options.timeout_secs = Some(1.0);
        let start = std::time::Instant::now();
        let e = command_error(options).await;
        let took = start.elapsed();
        assert!(
            e.contains("`sh -c") && e.contains("did not finish within 1s") && e.contains("killed"),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{took:?}"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        #[cfg(target_os = "linux")]
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the program (pid {pid}) still runs"
        );
        let _ = pid;
    }

    /// The program sees our PATH, HOME, locale… and what the task lists in `env`, nothing else
    /// (an API key in our environment does not reach it).
    #[tokio::test]
    async fn a_command_gets_a_clean_environment() {
        // Cargo sets CARGO_* in the environment of the tests: they stand for the secrets, so no
        // test has to change the environment of a process that runs tests in threads. (The
        // program may be a wrapper that adds variables of its own, like pyenv's shim.)
        let ours: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("CARGO"))
            .collect();
        let [shared, ..] = ours.as_slice() else {
            panic!("the test process needs CARGO_* variables (run it with cargo)")
        };
        let mut options = command(&[
            "python3",
            "-c",
            "import json, os; print(json.dumps({'score': 1, 'feedback': json.dumps(sorted(os.environ))}))",
        ]);
        options.env = vec![shared.clone()];
        let m = metric(MetricSpec::Command(options).into());
        let feedback = m.score(&ex("x"), "y").await.unwrap().feedback.unwrap();
        let seen: Vec<String> = serde_json::from_str(&feedback).unwrap();
        assert!(seen.contains(shared), "{shared} not passed: {seen:?}");
        for name in &ours[1..] {
            assert!(!seen.contains(name), "{name} leaked: {seen:?}");
        }
        assert_eq!(
            seen.contains(&"PATH".to_string()),
            std::env::var_os("PATH").is_some(),
            "{seen:?}"
        );
        assert!(ours.len() > 1, "no variable was left out: {ours:?}");
    }
}
