//! Bad input through the real binary: every invalid scenario fixture makes `thingswarm run`
//! exit 2 with one line naming `file:line:col`, before any identity, broker or connection
//! exists (no certificate directory, no report directory).

use std::path::PathBuf;

use assert_cmd::Command;

fn invalid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/scenarios/invalid")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_exits_2_with_one_line_before_any_work() {
    let files = invalid_fixtures();
    assert!(files.len() >= 30, "only {} fixtures", files.len());
    let tmp = tempfile::tempdir().unwrap();
    for file in files {
        let certs = tmp.path().join("certs");
        let out = tmp.path().join("out");
        let output = Command::cargo_bin("thingswarm")
            .unwrap()
            .arg("run")
            .arg(&file)
            .arg("--no-tui")
            .arg("--certs-dir")
            .arg(&certs)
            .arg("--out")
            .arg(&out)
            .timeout(std::time::Duration::from_secs(30))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {stderr}",
            file.display()
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{}: not one line: {stderr}",
            file.display()
        );
        let prefix = format!("thingswarm: {}:", file.display());
        let rest = stderr
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("does not name the file: {stderr}"));
        let mut pos = rest.splitn(3, ':');
        let line: usize = pos.next().unwrap().parse().unwrap_or(0);
        let col: usize = pos.next().unwrap_or("").parse().unwrap_or(0);
        assert!(line > 0 && col > 0, "no line:col: {stderr}");
        assert!(output.stdout.is_empty(), "{}", file.display());
        assert!(!certs.exists(), "{}: identities were made", file.display());
        assert!(!out.exists(), "{}: a report was written", file.display());
    }
}
