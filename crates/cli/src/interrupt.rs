//! Ctrl-C during training: the process stops at once (checkpoints are
//! written whole, so nothing is half-saved), after saying where the run
//! stopped and the command that continues it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::checkpoint;

/// The run in progress: its directory and the epochs it plans.
static RUN: Mutex<Option<(PathBuf, usize)>> = Mutex::new(None);

/// Exit status of a process stopped by SIGINT, as shells report it.
const INTERRUPTED: i32 = 130;

/// Handle Ctrl-C (SIGINT) on a thread of its own from now on.
pub fn install() {
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    eprintln!("\n{}", message());
                    std::process::exit(INTERRUPTED);
                }
            });
        }
        // Without the handler Ctrl-C still stops the process, silently.
        Err(e) => tracing::warn!("cannot handle Ctrl-C: {e}"),
    }
}

/// Record that a run of `epochs` epochs is training in `dir`.
pub fn running(dir: &Path, epochs: usize) {
    if let Ok(mut run) = RUN.lock() {
        *run = Some((dir.to_path_buf(), epochs));
    }
}

/// What Ctrl-C says. The epochs done are read from the checkpoints on
/// disk, so the message is right even if the signal lands while one is
/// being written.
fn message() -> String {
    let run = RUN
        .lock()
        .ok()
        .and_then(|run| run.clone())
        .map(|(dir, epochs)| {
            let done = checkpoint::latest(&dir)
                .ok()
                .flatten()
                .map_or(0, |(_, state)| state.epochs_done);
            (dir, done, epochs)
        });
    match run {
        None => "Interrupted before training started; nothing was written.".to_string(),
        Some((dir, done, epochs)) if done >= epochs => format!(
            "Interrupted after the last epoch, while writing the report; every epoch's work is \
             in the last checkpoint under {}.",
            dir.join("checkpoints").display()
        ),
        Some((dir, 0, epochs)) => format!(
            "Interrupted during epoch 1 of {epochs}, before the first checkpoint; start again with \
             `mnist train --out {}` and the same flags.",
            dir.display()
        ),
        Some((dir, done, epochs)) => format!(
            "Interrupted during epoch {} of {epochs}; the checkpoint after epoch {done} is kept. \
             Continue with: mnist train --resume {}",
            done + 1,
            dir.display()
        ),
    }
}
