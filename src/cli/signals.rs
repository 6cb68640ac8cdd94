//! Ctrl-C, `kill` and a closed terminal remove the staging folders of the writes in progress
//! before the process exits, so an interrupted run leaves nothing behind.
//!
//! One thread waits for the signals (`signal-hook`'s iterator, whose handler only wakes it), so
//! the clean-up runs as ordinary code rather than in a signal handler.

/// Start the signal thread; call first in `main`.
#[cfg(unix)]
pub fn install() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;
    // The handlers are registered inside the thread: where there is no thread, or the handlers
    // cannot be registered, the signals keep their default action and a later run removes the
    // stale staging folders.
    let wait = || {
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
        if let Some(signal) = signals.forever().next() {
            scalpel::checkpoint::remove_live_staging();
            eprintln!("scalpel: interrupted (signal {signal}); the unfinished output was removed");
            std::process::exit(128 + signal);
        }
    };
    if std::thread::Builder::new().name("signals".into()).spawn(wait).is_err() {
        tracing::debug!("no signal thread: an interrupted run leaves its staging folder to the next run");
    }
}

/// Elsewhere the signals keep their default action (a later run removes stale staging folders).
#[cfg(not(unix))]
pub fn install() {}
