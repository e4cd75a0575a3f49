//! Diagnostics on stderr through `tracing`: what the libraries report (data
//! loading, downloads, checkpoints, backend choice, per-epoch phase times)
//! at a level set by `RUST_LOG` or `-v` / `-q`, as text or JSON lines.
//!
//! The notebook's progress lines and the final report are not diagnostics:
//! they stay on stdout, printed as they always were.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// How diagnostics are written to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// The flags every subcommand takes.
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// More diagnostics on stderr: -v info, -vv debug (per-epoch phase
    /// times), -vvv trace. RUST_LOG, when set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Fewer diagnostics: -q errors only, -qq none.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Diagnostics as text or as JSON lines.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// The level `-v` / `-q` ask for; warnings by default.
    pub fn level(&self) -> LevelFilter {
        let steps = i16::from(self.verbose) - i16::from(self.quiet);
        match steps {
            i16::MIN..=-2 => LevelFilter::OFF,
            -1 => LevelFilter::ERROR,
            0 => LevelFilter::WARN,
            1 => LevelFilter::INFO,
            2 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    }

    /// The filter: `RUST_LOG`'s directives when it is set and not empty,
    /// else the level of `-v` / `-q` for everything.
    fn filter(&self, rust_log: Option<&str>) -> EnvFilter {
        let default = EnvFilter::builder().with_default_directive(self.level().into());
        match rust_log.filter(|s| !s.trim().is_empty()) {
            Some(directives) => default.parse_lossy(directives),
            None => default.parse_lossy(""),
        }
    }

    /// Install the subscriber for this process.
    pub fn install(&self) {
        let rust_log = std::env::var("RUST_LOG").ok();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.filter(rust_log.as_deref()))
            .with_writer(std::io::stderr);
        // A second subscriber (only possible in tests) is not an error worth
        // stopping for: the first one keeps logging.
        let _ = match self.log_format {
            LogFormat::Text => builder.with_ansi(stderr_is_terminal()).try_init(),
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
        };
    }
}

fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(verbose: u8, quiet: u8) -> LogArgs {
        LogArgs {
            verbose,
            quiet,
            log_format: LogFormat::Text,
        }
    }

    #[test]
    fn verbosity_counts_move_the_level_both_ways() {
        assert_eq!(args(0, 0).level(), LevelFilter::WARN);
        assert_eq!(args(1, 0).level(), LevelFilter::INFO);
        assert_eq!(args(2, 0).level(), LevelFilter::DEBUG);
        assert_eq!(args(5, 0).level(), LevelFilter::TRACE);
        assert_eq!(args(0, 1).level(), LevelFilter::ERROR);
        assert_eq!(args(0, 3).level(), LevelFilter::OFF);
    }

    #[test]
    fn rust_log_takes_precedence_over_the_flags() {
        let filter = args(0, 0).filter(Some("mnist_data=debug"));
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::DEBUG));
        let filter = args(2, 0).filter(None);
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::DEBUG));
        // An empty RUST_LOG is as if unset.
        let filter = args(1, 0).filter(Some(" "));
        assert_eq!(filter.max_level_hint(), Some(LevelFilter::INFO));
    }
}
