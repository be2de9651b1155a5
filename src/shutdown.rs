//! Interrupts: the first Ctrl-C or SIGTERM (what CI and Kubernetes send) stops the run
//! gracefully (publishers stop, in-flight acknowledgements are awaited for a bounded time,
//! devices disconnect, the report is written, exit 130); a second one of either exits at once.
//! Under the terminal UI, Ctrl-C arrives as a key (raw mode) and the UI applies the same rule;
//! a SIGINT or SIGTERM from elsewhere still lands here.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Watches for Ctrl-C (SIGINT) and SIGTERM on the current runtime and cancels `stop` at the
/// first one; the second exits the process (see [`exit_now`]).
pub fn on_ctrl_c(stop: CancellationToken) {
    tokio::spawn(async move {
        // Without a SIGTERM handler (registration can fail only if the runtime has no signal
        // driver) Ctrl-C still works.
        let mut term = signal(SignalKind::terminate()).ok();
        if !interrupt(&mut term).await {
            return;
        }
        if !crate::tui::terminal::is_active() {
            // Under the dashboard this line would garble the screen; the phase shows it.
            eprintln!(
                "\ninterrupted: stopping publishers, waiting for in-flight acknowledgements, disconnecting devices and writing the report (interrupt again to exit now)"
            );
        }
        stop.cancel();
        interrupt(&mut term).await;
        exit_now();
    });
}

/// The next SIGINT or SIGTERM; `false` when no SIGINT handler could be installed (then no
/// interrupt will ever be seen through this path).
async fn interrupt(term: &mut Option<Signal>) -> bool {
    let terminated = async {
        match term {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        () = terminated => true,
    }
}

/// The second interrupt: give the terminal back (if the dashboard holds it) and exit with 130
/// without waiting for the drain or the report.
pub fn exit_now() -> ! {
    crate::tui::terminal::restore();
    std::process::exit(130);
}
