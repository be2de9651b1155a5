//! Ctrl-C: once stops the run gracefully (devices disconnect, the report is written, exit
//! 130); twice exits at once. Under the terminal UI, Ctrl-C arrives as a key (raw mode) and
//! the UI applies the same rule; a SIGINT from elsewhere still lands here.

use tokio_util::sync::CancellationToken;

/// Watches for Ctrl-C on the current runtime and cancels `stop` at the first one.
pub fn on_ctrl_c(stop: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if !crate::tui::terminal::is_active() {
            // Under the dashboard this line would garble the screen; the phase shows it.
            eprintln!(
                "\ninterrupted: disconnecting devices and writing the report (Ctrl-C again exits now)"
            );
        }
        stop.cancel();
        let _ = tokio::signal::ctrl_c().await;
        exit_now();
    });
}

/// The second Ctrl-C: give the terminal back (if the dashboard holds it) and exit with 130
/// without waiting for the drain or the report.
pub fn exit_now() -> ! {
    crate::tui::terminal::restore();
    std::process::exit(130);
}
