//! Ctrl-C, `kill` and a closed terminal remove the staging folders of the writes in progress
//! before the process exits, so an interrupted run leaves nothing behind.
//!
//! The signals are blocked in every thread and waited for by one thread (`sigwait`), so the
//! clean-up runs as ordinary code rather than in a signal handler.

/// Start the signal thread; call first in `main`, before any other thread exists (threads
/// inherit the blocked set).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn install() {
    // SAFETY: plain libc calls on a local, initialized signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let wait = move || {
            let mut signal: libc::c_int = 0;
            // SAFETY: `set` is the initialized set blocked above.
            if libc::sigwait(&set, &mut signal) == 0 {
                scalpel::checkpoint::remove_live_staging();
                eprintln!("scalpel: interrupted (signal {signal}); the unfinished output was removed");
                std::process::exit(128 + signal);
            }
        };
        if std::thread::Builder::new().name("signals".into()).spawn(wait).is_err() {
            // No thread to wait: restore the default behaviour.
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Elsewhere the signals keep their default action (a later run removes stale staging folders).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn install() {}
