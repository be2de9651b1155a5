//! Ctrl-C: once stops the run gracefully (devices disconnect, the report is written, exit
//! 130); twice exits at once.

use tokio_util::sync::CancellationToken;

/// Watches for Ctrl-C on the current runtime and cancels `stop` at the first one.
pub fn on_ctrl_c(stop: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!(
            "\ninterrupted: disconnecting devices and writing the report (Ctrl-C again exits now)"
        );
        stop.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
