//! The event loop: its own OS thread (named `thingswarm-tui`, so its CPU can be read from
//! `/proc`) with a single-threaded runtime, drawing at [`FPS`] and answering keys. It never
//! shares a worker with device tasks: a slow terminal cannot delay a handshake, and a busy
//! fleet delays the screen by at most one frame.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::render::render;
use super::terminal::{self, TerminalGuard};
use super::{Header, View, FPS};
use crate::fleet::control::{Control, Controller};
use crate::stats::Snapshot;

/// How long an answer to a key stays on the status line.
const STATUS_FOR: Duration = Duration::from_secs(5);
/// Status after `q` / Esc.
const STOPPING: &str = "stopping: devices disconnect, then the report is written (exit code 130)";
/// Status after the first Ctrl-C.
const INTERRUPTED: &str =
    "interrupted: devices disconnect, then the report is written (Ctrl-C again exits now)";

/// The running dashboard. Dropping it (or [`Ui::finish`]) ends the loop and gives the
/// terminal back before returning, so whatever the caller prints next lands on the normal
/// screen.
pub struct Ui {
    summary: Option<mpsc::UnboundedSender<String>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Ui {
    /// Takes over the terminal and starts drawing snapshots from `snapshots`. `q`, Esc and
    /// Ctrl-C cancel `stop` (the run then drains and writes its report as on SIGINT); a second
    /// Ctrl-C exits the process at once; `p`, `+` and `-` go to `control`. With
    /// `exit_on_finish` the summary is not shown.
    pub fn start(
        header: Header,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
        control: Arc<Controller>,
        exit_on_finish: bool,
    ) -> io::Result<Ui> {
        let guard = TerminalGuard::enter()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let view = View::new(header);
        let thread = std::thread::Builder::new()
            .name("thingswarm-tui".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()?;
                let keys = Keys { stop, control };
                runtime.block_on(event_loop(guard, view, snapshots, keys, rx, exit_on_finish))
            })?;
        Ok(Ui {
            summary: Some(tx),
            thread: Some(thread),
        })
    }

    /// Shows the end-of-run `summary` until a key is pressed (at once with `exit_on_finish`),
    /// then restores the terminal.
    pub fn finish(mut self, summary: String) -> io::Result<()> {
        if let Some(tx) = self.summary.take() {
            let _ = tx.send(summary);
        }
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        self.summary = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the terminal UI panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// What keys act on besides the view.
struct Keys {
    stop: CancellationToken,
    control: Arc<Controller>,
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Metric,
    Distribution,
    Stop,
    CtrlC,
    Help,
    Focus,
    Pause,
    Rate { up: bool },
    None,
}

/// The status line after a traffic key.
fn traffic_status(c: Control) -> String {
    match c.paused {
        true => format!(
            "traffic paused (p resumes at {}% of the planned rate); connections stay up",
            c.rate_percent
        ),
        false => format!(
            "traffic at {}% of the planned rate (recorded in the report)",
            c.rate_percent
        ),
    }
}

fn action(key: KeyEvent) -> Action {
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::CtrlC,
        KeyCode::Char('q') | KeyCode::Esc => Action::Stop,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Tab => Action::Focus,
        KeyCode::Char('m') => Action::Metric,
        KeyCode::Char('d') => Action::Distribution,
        KeyCode::Char('p') => Action::Pause,
        // `=` is `+` without shift on most layouts.
        KeyCode::Char('+' | '=') => Action::Rate { up: true },
        KeyCode::Char('-') => Action::Rate { up: false },
        _ => Action::None,
    }
}

async fn event_loop(
    mut guard: TerminalGuard,
    mut view: View,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    keys: Keys,
    mut summary: mpsc::UnboundedReceiver<String>,
    exit_on_finish: bool,
) -> io::Result<()> {
    let mut events = EventStream::new();
    let mut keys_open = true;
    let mut frames = interval(Duration::from_secs(1) / FPS);
    frames.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut status_until: Option<Instant> = None;
    let mut ctrl_c = 0;

    loop {
        tokio::select! {
            _ = frames.tick() => {
                view.update(snapshots.borrow().clone());
                if status_until.is_some_and(|t| Instant::now() >= t) {
                    view.status = None;
                    status_until = None;
                }
            }
            text = summary.recv(), if view.finished.is_none() => match text {
                // Waiting for a key needs keys: without them, leave at once.
                Some(text) if !exit_on_finish && keys_open => {
                    view.update(snapshots.borrow().clone());
                    view.finished = Some(text);
                    view.help = false;
                }
                // The run is over and nobody waits for a key (or the caller gave up).
                _ => return Ok(()),
            },
            event = events.next(), if keys_open => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    if view.finished.is_some() {
                        return Ok(());
                    }
                    let mut say = |text: &str, until: Option<Instant>| {
                        view.status = Some(text.to_string());
                        status_until = until;
                    };
                    match action(key) {
                        Action::Stop => {
                            keys.stop.cancel();
                            say(STOPPING, None);
                        }
                        Action::CtrlC => {
                            ctrl_c += 1;
                            if ctrl_c > 1 {
                                crate::shutdown::exit_now();
                            }
                            keys.stop.cancel();
                            say(INTERRUPTED, None);
                        }
                        Action::Pause => {
                            view.control = keys.control.toggle_pause();
                            say(&traffic_status(view.control), Some(Instant::now() + STATUS_FOR));
                        }
                        Action::Rate { up } => {
                            view.control = keys.control.step(up);
                            say(&traffic_status(view.control), Some(Instant::now() + STATUS_FOR));
                        }
                        Action::Distribution => view.distribution = !view.distribution,
                        Action::Help => view.help = !view.help,
                        Action::Focus => view.focus = view.focus.next(),
                        Action::Metric => view.metric = view.metric.next(),
                        Action::None => {}
                    }
                }
                Some(Ok(_)) => {}
                // No more keys (stdin closed): keep drawing; SIGINT still stops the run.
                Some(Err(_)) | None => keys_open = false,
            },
        }
        if !terminal::is_active() {
            // A panic elsewhere gave the terminal back: do not draw over its message.
            return Ok(());
        }
        guard.terminal().draw(|frame| render(frame, &view))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(key(KeyCode::Char('q'), none)), Action::Stop);
        assert_eq!(action(key(KeyCode::Esc, none)), Action::Stop);
        assert_eq!(
            action(key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::CtrlC
        );
        assert_eq!(action(key(KeyCode::Char('c'), none)), Action::None);
        assert_eq!(action(key(KeyCode::Char('?'), none)), Action::Help);
        assert_eq!(action(key(KeyCode::Tab, none)), Action::Focus);
        assert_eq!(action(key(KeyCode::Char('m'), none)), Action::Metric);
        assert_eq!(action(key(KeyCode::Char('d'), none)), Action::Distribution);
        assert_eq!(action(key(KeyCode::Char('p'), none)), Action::Pause);
        for (c, up) in [('+', true), ('=', true), ('-', false)] {
            assert_eq!(action(key(KeyCode::Char(c), none)), Action::Rate { up });
        }
    }
}
