//! The report lines on stdout, written so that a closed pipe
//! (`mnist train | head -2`, quitting `less`) is not a crash: the first
//! failed write says once on stderr that stdout is gone, and the command
//! carries on — a training run keeps training and writes its files.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout stopped taking lines.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Print one line to stdout, unless stdout is gone.
pub fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{args}").and_then(|()| out.flush());
    if let Err(e) = written
        && !CLOSED.swap(true, Ordering::Relaxed)
    {
        let why = match e.kind() {
            ErrorKind::BrokenPipe => "stdout was closed".to_string(),
            _ => format!("stdout cannot be written ({e})"),
        };
        eprintln!("note: {why}; carrying on without printing (files are still written)");
    }
}

/// `println!` through [`line()`].
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
