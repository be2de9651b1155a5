//! `--sni` and `--tls-backend` on `check` (the same `TargetArgs` as `run`): good values reach
//! the plan, bad ones are one line naming the flag and the expected form, exit 2, before any work.

use assert_cmd::Command;

fn check(extra: &[&str]) -> (Option<i32>, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["check", "scenarios/quickstart.toml"])
        .args(extra)
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(!tmp.path().join("certs").exists(), "identities were made");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_sni_and_backend_are_bad_input() {
    for (flags, expect) in [
        (
            ["--sni", "not a name"],
            "--sni \"not a name\" is not a valid TLS server name (expected a DNS name",
        ),
        (
            ["--tls-backend", "gnutls"],
            "--tls-backend: \"gnutls\" is not a TLS backend (expected \"rustls\", \"openssl\" or \"auto\")",
        ),
    ] {
        let (code, stdout, stderr) = check(&flags);
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "{flags:?}: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

#[test]
fn rustls_backend_flag_refuses_a_cbc_suite_and_openssl_accepts_it() {
    let cbc = ["--cipher-suite", "ECDHE-ECDSA-AES128-SHA"];
    let (code, _, stderr) = check(&[&cbc[..], &["--tls-backend", "rustls"]].concat());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("rustls refuses by design"), "{stderr}");
    let (code, _, stderr) = check(
        &[
            &cbc[..],
            &["--tls-backend", "openssl", "--sni", "broker.example.com"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// `thingswarm ARGS` with a fresh certs dir: exit code and stderr.
fn thingswarm(args: &[&str]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(args)
        .arg("--certs-dir")
        .arg(tmp.path().join("certs"))
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert!(
        !tmp.path().join("certs").exists(),
        "{args:?}: identities were made"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_matrix_spec_and_target_mistakes_are_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_spec = tmp.path().join("m.toml");
    std::fs::write(&bad_spec, "kind = \"tls-matrix\"\nhandshake = 3\n").unwrap();
    let bad_spec = bad_spec.to_str().unwrap().to_string();
    for (args, expect) in [
        (
            vec!["run", "scenarios/tls-matrix.toml", "--no-tui"],
            "this is a tls-matrix spec, not a run scenario (use thingswarm tls-matrix FILE)",
        ),
        (vec!["tls-matrix", "--insecure"], "apply to a --target only"),
        (
            vec!["tls-matrix", "--target", "mqtt://127.0.0.1:1", "--insecure"],
            "--target: ",
        ),
        (
            vec!["tls-matrix", "--target", "mqtts://127.0.0.1:1"],
            "no CA to verify the broker with",
        ),
        (vec!["tls-matrix", &bad_spec], "m.toml:2:1: "),
    ] {
        let (code, stderr) = thingswarm(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
