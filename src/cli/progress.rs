//! The library's progress counters shown on stderr: an `indicatif` bar on a terminal, one line
//! per finished item (a search trial) otherwise, nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use scalpel::progress::{Progress, Reporter, Unit};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silence every bar and line (`--quiet`); set once at start-up.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// How progress reaches the person running scalpel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Quiet,
}

fn mode() -> Mode {
    if QUIET.load(Ordering::Relaxed) {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Bar
    } else {
        Mode::Lines
    }
}

/// A counter on stderr.
pub struct Bar {
    bar: ProgressBar,
    mode: Mode,
    label: String,
}

impl Bar {
    /// A counter of `unit`s, labelled `label` (e.g. "search", "capturing").
    pub fn new(label: &str, unit: Unit) -> Bar {
        let mode = mode();
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if mode == Mode::Bar { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
        );
        let template = match unit {
            Unit::Items => "{prefix} [{bar:30}] {pos}/{len} {elapsed} eta {eta} {msg}",
            Unit::Bytes => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
        bar.set_prefix(label.to_string());
        Bar { bar, mode, label: label.to_string() }
    }

    /// A counter of `unit`s with a known total.
    pub fn with_length(label: &str, unit: Unit, length: u64) -> Bar {
        let bar = Bar::new(label, unit);
        bar.bar.set_length(length);
        bar
    }
}

impl Progress for Bar {
    fn set_length(&self, length: u64) {
        self.bar.set_length(length);
    }
    fn inc_length(&self, delta: u64) {
        self.bar.inc_length(delta);
    }
    fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }
    fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }
    fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }
    fn finished_item(&self, summary: &str) {
        match self.mode {
            Mode::Lines => eprintln!("{}: {summary}", self.label),
            Mode::Bar => self.bar.println(summary),
            Mode::Quiet => {}
        }
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `scalpel run`'s reporter: a line per step, a bar per long step.
pub struct Terminal;

impl Reporter for Terminal {
    fn note(&self, line: &str) {
        if mode() != Mode::Quiet {
            eprintln!("• {line}");
        }
    }
    fn progress(&self, label: &str, unit: Unit) -> Box<dyn Progress + '_> {
        Box::new(Bar::new(label, unit))
    }
}
