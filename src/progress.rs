//! What a person sees while a run goes on: one live line per running task
//! on a terminal, plain timestamped lines otherwise (CI logs, pipes).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use engine::TaskStatus;
use engine::scheduler::{Observer, RunEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub enum Progress {
    Live {
        bars: MultiProgress,
        running: Mutex<HashMap<String, ProgressBar>>,
    },
    /// Plain lines; remembers when each task's current attempt started so
    /// the closing line can say how long it took.
    Plain {
        started: Mutex<HashMap<String, std::time::Instant>>,
    },
}

impl Progress {
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Live {
                bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                running: Mutex::new(HashMap::new()),
            }
        } else {
            Progress::Plain {
                started: Mutex::new(HashMap::new()),
            }
        }
    }

    fn line(&self, text: &str) {
        match self {
            Progress::Live { bars, .. } => {
                let _ = bars.println(text);
            }
            Progress::Plain { .. } => {
                let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let _ = writeln!(std::io::stderr().lock(), "{stamp} {text}");
            }
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Observer for Progress {
    fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::Note(text) => self.line(&format!("note: {text}")),
            RunEvent::AttemptStarted { task_id, attempt } => match self {
                Progress::Live { bars, running } => {
                    // Styled before it is shown, so its first frame is complete.
                    let bar = ProgressBar::new_spinner()
                        .with_style(
                            ProgressStyle::with_template(
                                "{spinner} {prefix:24} attempt {msg}  {elapsed}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        )
                        .with_prefix(task_id.clone())
                        .with_message(attempt.to_string());
                    let bar = bars.add(bar);
                    bar.enable_steady_tick(Duration::from_millis(120));
                    if let Ok(mut running) = running.lock() {
                        running.insert(task_id.clone(), bar);
                    }
                }
                Progress::Plain { started } => {
                    if let Ok(mut started) = started.lock() {
                        started.insert(task_id.clone(), std::time::Instant::now());
                    }
                    self.line(&format!("{task_id}: attempt {attempt} started"))
                }
            },
            RunEvent::AttemptFailed {
                task_id,
                attempt,
                error,
                retry_in,
            } => {
                self.finish_bar(task_id);
                let first_line = error.lines().next().unwrap_or_default();
                match retry_in {
                    Some(delay) => self.line(&format!(
                        "{task_id}: attempt {attempt} failed: {first_line}; retrying in {}",
                        seconds(*delay)
                    )),
                    None => self.line(&format!(
                        "{task_id}: attempt {attempt} failed: {first_line}"
                    )),
                }
            }
            RunEvent::AttemptProgress {
                task_id,
                attempt,
                message,
                lasting,
            } => match self {
                Progress::Live { bars, running } => {
                    if let Ok(running) = running.lock()
                        && let Some(bar) = running.get(task_id)
                    {
                        bar.set_message(format!("{attempt}  {message}"));
                    }
                    if *lasting {
                        let _ = bars.println(format!("{task_id}: {message}"));
                    }
                }
                Progress::Plain { .. } => {
                    if *lasting {
                        self.line(&format!("{task_id}: {message}"));
                    }
                }
            },
            RunEvent::TaskEnded { task_id, status } => {
                let elapsed = self.finish_bar(task_id);
                let took = elapsed
                    .map(|d| format!(" in {}", seconds(d)))
                    .unwrap_or_default();
                let mark = match status {
                    TaskStatus::Succeeded => "ok",
                    TaskStatus::Failed => "FAILED",
                    TaskStatus::UpstreamFailed => "skipped (upstream failed)",
                    TaskStatus::Cancelled => "cancelled",
                    _ => status.as_str(),
                };
                self.line(&format!("{task_id}: {mark}{took}"));
            }
        }
    }
}

impl Progress {
    /// Ends the task's live line; returns how long its attempt ran.
    fn finish_bar(&self, task_id: &str) -> Option<Duration> {
        match self {
            Progress::Live { running, .. } => {
                let bar = running.lock().ok()?.remove(task_id)?;
                let elapsed = bar.elapsed();
                bar.finish_and_clear();
                Some(elapsed)
            }
            Progress::Plain { started } => Some(started.lock().ok()?.remove(task_id)?.elapsed()),
        }
    }
}
