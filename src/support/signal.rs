//! SIGINT and SIGTERM share one path: a watch channel that flips to true, and
//! the signal's exit code. A second signal exits at once.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

use crate::support::exit::Exit;

static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// Starts listening for SIGINT/SIGTERM; the returned receiver flips to true on
/// the first one. Must be called inside a tokio runtime.
pub fn shutdown_channel() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let code = tokio::select! {
                _ = int.recv() => 130u8,
                _ = term.recv() => 143u8,
            };
            if RECEIVED.swap(code, Ordering::SeqCst) != 0 {
                // Second signal: give up at once; pending work stays in Redis, and the
                // coding agents in flight go with us.
                crate::support::process::exit_now(i32::from(code));
            }
            tracing::warn!("stopping (signal received); a second signal exits at once");
            let _ = tx.send(true);
        }
    });
    rx
}

/// The exit code of the signal received, if any.
pub fn received() -> Option<Exit> {
    match RECEIVED.load(Ordering::SeqCst) {
        130 => Some(Exit::Interrupted),
        143 => Some(Exit::Terminated),
        _ => None,
    }
}

/// Resolves when the cancel flag is (or becomes) true; never if the sender is gone while false.
pub async fn wait_cancelled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            if *rx.borrow() {
                return;
            }
            std::future::pending::<()>().await;
        }
    }
}
