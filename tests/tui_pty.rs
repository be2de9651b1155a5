//! The real binary in a real pseudo-terminal: `thingswarm run --tui` on the quickstart
//! scenario against the embedded broker, `q` pressed mid-run, a key on the final screen.
//! Checks the exit code (130: `q` is a graceful user stop, like Ctrl-C), the report
//! (`"interrupted": true`), and that the terminal was given back: the alternate screen left
//! and the tty modes (`stty -g`) as they were before the run.
//!
//! Drives tmux when installed (`.ci/run` installs it), else util-linux `script`; skips with a
//! note only when neither exists outside CI. `THINGSWARM_TEST_PTY=script` forces `script`.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_thingswarm");
/// Identities for 300 devices plus the broker start, on a slow shared machine.
const UI_UP_WITHIN: Duration = Duration::from_secs(120);
/// Draining 300 devices and writing the report.
const FINISHED_WITHIN: Duration = Duration::from_secs(60);

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn wait_for(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
    screen: impl Fn() -> String,
) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < within,
            "no {what} within {within:?}; screen:\n{}",
            screen()
        );
        sleep(Duration::from_millis(100));
    }
}

/// A terminal the test can read and type into.
enum Pty {
    /// A private tmux server (its own socket), killed on drop.
    Tmux { socket: String },
    /// `script` with its output collected by a reader thread.
    Script {
        child: Child,
        stdin: ChildStdin,
        output: Arc<Mutex<Vec<u8>>>,
    },
}

impl Pty {
    fn start(dir: &Path, force_script: bool) -> Option<Pty> {
        let d = dir.display();
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml");
        // The tty modes are saved before and after the run, from inside the terminal.
        let run = format!(
            "stty -g > {d}/stty.before; {BIN} run {scenario} --tui --certs-dir {d}/certs \
             --out {d}/out 2> {d}/stderr; echo $? > {d}/exit; stty -g > {d}/stty.after"
        );
        if installed("tmux") && !force_script {
            let socket = format!("thingswarm-test-{}", std::process::id());
            let pty = Pty::Tmux { socket };
            // The shell stays after the run so the normal screen can be read.
            let status = pty
                .tmux(&[
                    "new-session",
                    "-d",
                    "-s",
                    "t",
                    "-x",
                    "100",
                    "-y",
                    "30",
                    &format!("{run}; sleep 600"),
                ])
                .status;
            assert!(status.success(), "tmux new-session failed");
            return Some(pty);
        }
        if installed("script") {
            let mut child = Command::new("script")
                .args([
                    "-q",
                    "-c",
                    &format!("stty rows 30 cols 100; {run}"),
                    "/dev/null",
                ])
                .env("TERM", "xterm-256color")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting script");
            let stdin = child.stdin.take().unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let output = Arc::new(Mutex::new(Vec::new()));
            let sink = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            return Some(Pty::Script {
                child,
                stdin,
                output,
            });
        }
        None
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        let Pty::Tmux { socket } = self else {
            unreachable!()
        };
        Command::new("tmux")
            .args(["-L", socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux")
    }

    /// What the terminal shows (tmux) or everything written to it so far (script).
    fn screen(&self) -> String {
        match self {
            Pty::Tmux { .. } => {
                String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-J", "-t", "t"]).stdout)
                    .into()
            }
            Pty::Script { output, .. } => String::from_utf8_lossy(&output.lock().unwrap()).into(),
        }
    }

    fn press(&mut self, key: &str) {
        match self {
            Pty::Tmux { .. } => assert!(self.tmux(&["send-keys", "-t", "t", key]).status.success()),
            Pty::Script { stdin, .. } => {
                stdin.write_all(key.as_bytes()).unwrap();
                stdin.flush().unwrap();
            }
        }
    }

    /// Whether the terminal is on the alternate screen now (tmux only).
    fn alternate_on(&self) -> Option<bool> {
        match self {
            Pty::Tmux { .. } => {
                let out = self.tmux(&["display-message", "-p", "-t", "t", "#{alternate_on}"]);
                Some(String::from_utf8_lossy(&out.stdout).trim() == "1")
            }
            Pty::Script { .. } => None,
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        match self {
            Pty::Tmux { .. } => {
                self.tmux(&["kill-server"]);
            }
            Pty::Script { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[test]
fn q_stops_the_run_writes_the_report_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let force_script = std::env::var("THINGSWARM_TEST_PTY").as_deref() == Ok("script");
    let Some(mut pty) = Pty::start(dir.path(), force_script) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must install tmux (see .ci/run)"
        );
        eprintln!("skipping: neither tmux nor script is installed");
        return;
    };
    let exit_file = dir.path().join("exit");
    let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    // The dashboard is up once its panels are drawn.
    wait_for(
        "dashboard",
        UI_UP_WITHIN,
        || pty.screen().contains("connections (300 planned)") || exit_file.exists(),
        || format!("{}\nstderr:\n{}", pty.screen(), stderr()),
    );
    assert!(!exit_file.exists(), "the run ended before q: {}", stderr());
    assert_ne!(
        pty.alternate_on(),
        Some(false),
        "the dashboard uses the alternate screen"
    );
    // Traffic keys: pause, one rate step up, resume; the header says so, the report logs them.
    pty.press("p");
    wait_for(
        "pause shown",
        Duration::from_secs(10),
        || pty.screen().contains("TRAFFIC PAUSED"),
        || pty.screen(),
    );
    pty.press("+");
    pty.press("p");
    wait_for(
        "rate shown",
        Duration::from_secs(10),
        || pty.screen().contains("rate 110%"),
        || pty.screen(),
    );
    sleep(Duration::from_secs(1));

    pty.press("q");
    wait_for(
        "final screen",
        FINISHED_WITHIN,
        || pty.screen().contains("run finished: press any key") || exit_file.exists(),
        || format!("{}\nstderr:\n{}", pty.screen(), stderr()),
    );
    assert!(!exit_file.exists(), "the summary waits for a key");
    assert!(pty.screen().contains("INTERRUPTED"), "{}", pty.screen());

    pty.press("x");
    wait_for(
        "exit",
        Duration::from_secs(30),
        || exit_file.exists(),
        || pty.screen(),
    );
    sleep(Duration::from_millis(300)); // stty.after, and the last output
    let code = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(
        code.trim(),
        "130",
        "q is a graceful stop, like Ctrl-C; stderr:\n{}",
        stderr()
    );

    let report = std::fs::read_to_string(dir.path().join("out/report.json")).unwrap();
    assert!(report.contains(r#""interrupted": true"#), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let actions: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pause", "rate", "resume"], "{report}");

    // The terminal is back: same tty modes (raw mode left), alternate screen left, and the
    // summary printed on the normal screen after the dashboard.
    let before = std::fs::read_to_string(dir.path().join("stty.before")).unwrap();
    let after = std::fs::read_to_string(dir.path().join("stty.after")).unwrap();
    assert!(!before.trim().is_empty());
    assert_eq!(before, after, "tty modes after the run differ from before");
    let screen = pty.screen();
    match pty.alternate_on() {
        Some(on) => assert!(!on, "still on the alternate screen:\n{screen}"),
        None => {
            let entered = screen
                .find("\x1b[?1049h")
                .expect("entered the alternate screen");
            let left = screen
                .rfind("\x1b[?1049l")
                .expect("left the alternate screen");
            assert!(entered < left);
            assert!(
                screen[left..].contains("INTERRUPTED"),
                "summary after leaving"
            );
        }
    }
    assert!(screen.contains("INTERRUPTED, partial figures"), "{screen}");
    assert!(screen.contains("report.json"), "{screen}");
}
