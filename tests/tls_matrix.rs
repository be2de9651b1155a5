//! `thingswarm tls-matrix` end to end: the real binary runs two cells (an OpenSSL CBC suite with
//! an ECDSA server, a static-RSA suite with an RSA server) against its own mosquitto per cell
//! and writes the table and JSON; every seed suite negotiates when both sides allow it; the
//! shipped spec runs against an external broker (which decides the cells); a bad suite name is
//! exit 2.

use std::path::Path;

use assert_cmd::Command;
use thingswarm::tls::matrix::{CellReport, SEED_SUITES, TLS13_SUITES};

/// Runs `thingswarm tls-matrix ARGS --certs-dir CERTS --json FILE`: exit code, cells, stderr;
/// `None` when mosquitto is missing outside CI.
fn matrix(args: &[&str], certs: &Path) -> Option<(Option<i32>, Vec<CellReport>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("matrix.json");
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .arg("tls-matrix")
        .args(args)
        .arg("--certs-dir")
        .arg(certs)
        .arg("--json")
        .arg(&json)
        .timeout(std::time::Duration::from_secs(240))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("not found (install it") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipping: {stderr}");
        return None;
    }
    let cells = match std::fs::read_to_string(&json) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(e) => panic!("no JSON ({e}): {stderr}"),
    };
    Some((out.status.code(), cells, stderr))
}

/// The IANA name OpenSSL reports for a seed suite, e.g. ECDHE-RSA-AES128-SHA ->
/// TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA.
fn iana(suite: &str) -> String {
    if suite.starts_with("TLS_") {
        return suite.to_string();
    }
    let (kx, rest) = match suite.strip_prefix("ECDHE-ECDSA-") {
        Some(r) => ("ECDHE_ECDSA", r),
        None => match suite.strip_prefix("ECDHE-RSA-") {
            Some(r) => ("ECDHE_RSA", r),
            None => ("RSA", suite),
        },
    };
    let parts: Vec<&str> = rest.split('-').collect();
    let bits = &parts[0][3..];
    let (mode, mac) = match parts.as_slice() {
        [_, "GCM", mac] => ("GCM", *mac),
        [_, mac] => ("CBC", *mac),
        _ => panic!("{suite}"),
    };
    format!("TLS_{kx}_WITH_AES_{bits}_{mode}_{mac}")
}

#[test]
fn every_seed_suite_negotiates_when_both_sides_allow_it() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let ecdsa: Vec<&str> = SEED_SUITES
        .iter()
        .copied()
        .filter(|s| s.contains("ECDSA"))
        .collect();
    let rsa: Vec<&str> = SEED_SUITES
        .iter()
        .copied()
        .filter(|s| !s.contains("ECDSA"))
        .chain(TLS13_SUITES)
        .collect();
    assert_eq!((ecdsa.len(), rsa.len()), (6, 14));
    let mut seen = Vec::new();
    for (suites, algorithm) in [(&ecdsa, "ecdsa-p256-sha256"), (&rsa, "rsa2048-sha256")] {
        let mut args = vec![
            "--algorithm",
            algorithm,
            "--devices",
            "1",
            "--handshakes",
            "1",
        ];
        for s in suites.iter() {
            args.extend(["--cipher-suite", s]);
        }
        let Some((code, cells, stderr)) = matrix(&args, &certs) else {
            return;
        };
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(cells.len(), suites.len(), "{stderr}");
        for c in &cells {
            let version = if c.suite.starts_with("TLS_") {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            };
            // rustls names TLS 1.3 suites TLS13_*, OpenSSL by their IANA names.
            let name = match (version, c.backend.as_str()) {
                ("TLSv1.3", "rustls") => c.suite.replacen("TLS_", "TLS13_", 1),
                _ => iana(&c.suite),
            };
            assert_eq!(c.negotiated, Some(format!("{version} {name}")), "{c:?}");
            assert_eq!(c.device_key, algorithm);
            assert_eq!((c.handshakes_ok, c.connects), (1, 1), "{c:?}");
            assert!(c.failures.is_empty(), "{c:?}");
            seen.push(c.suite.clone());
        }
    }
    seen.sort();
    let mut all: Vec<String> = SEED_SUITES
        .iter()
        .chain(&TLS13_SUITES)
        .map(|s| s.to_string())
        .collect();
    all.sort();
    assert_eq!(seen, all);
}

#[test]
fn the_shipped_spec_runs_against_an_external_target_which_decides_the_cells() {
    use thingswarm::broker::mosquitto::Mosquitto;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    // The devices' CA first, so the broker can trust it.
    let init = Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "certs",
            "init",
            "--algorithm",
            "ecdsa-p256-sha256",
            "--certs-dir",
        ])
        .arg(&certs)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let roots = thingswarm::identity::read_pem_certs(
        &certs.join("ca/ecdsa-p256-sha256/root.pem"),
        Some("the devices' root"),
    )
    .unwrap();
    // A P-256 server key: the ECDSA suite can negotiate, the ECDHE-RSA one cannot.
    let Some(broker) = Mosquitto::start_unless_missing(&roots, "").unwrap() else {
        return;
    };
    let url = format!("mqtts://{}", broker.addr());
    let ca = broker.server_ca().to_path_buf();
    let ca = ca.to_str().unwrap();
    let args = [
        "scenarios/tls-matrix.toml",
        "--target",
        &url,
        "--server-ca",
        ca,
        "--tls-version",
        "1.2",
        "--cipher-suite",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "--cipher-suite",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "--algorithm",
        "ecdsa-p256-sha256",
        "--devices",
        "2",
        "--handshakes",
        "2",
    ];
    let (code, cells, stderr) = matrix(&args, &certs).expect("mosquitto ran");
    assert!(stderr.contains(&format!("against {url}")), "{stderr}");
    assert_eq!(code, Some(1), "a refused cell fails the matrix: {stderr}");
    assert_eq!(cells.len(), 2, "{stderr}");
    let (ok, refused) = (&cells[0], &cells[1]);
    assert_eq!(ok.suite, "ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_eq!(
        ok.negotiated.as_deref(),
        Some("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
    );
    assert_eq!(ok.server_key, "(target's)");
    assert_eq!((ok.handshakes_ok, ok.connects, ok.devices), (2, 2, 2));
    assert!(
        ok.client_cpu_ms.is_some() && ok.connect_ms_p50.is_some(),
        "{ok:?}"
    );
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(refused.suite, "ECDHE-RSA-AES128-GCM-SHA256");
    assert_eq!(
        (
            refused.handshakes_ok,
            refused.connects,
            refused.negotiated.as_deref()
        ),
        (0, 0, None)
    );
    assert!(
        refused.failures.iter().any(|f| f.starts_with("probe: ")),
        "{refused:?}"
    );
    assert!(
        refused
            .failures
            .iter()
            .any(|f| f.starts_with("tls") && f.ends_with(" x2")),
        "the devices' failure is classified: {refused:?}"
    );
    drop(broker);
}

#[test]
fn two_cells_negotiate_what_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("matrix.json");
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args([
            "tls-matrix",
            "--cipher-suite",
            "ECDHE-ECDSA-AES128-SHA",
            "--cipher-suite",
            "AES256-GCM-SHA384",
            "--algorithm",
            "ecdsa-p256-sha256",
            "--devices",
            "2",
            "--handshakes",
            "3",
        ])
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .arg("--json")
        .arg(&json)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("not found (install it") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipping: {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let cells: Vec<CellReport> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let seen: Vec<(&str, &str, Option<&str>, u64)> = cells
        .iter()
        .map(|c| {
            (
                c.suite.as_str(),
                c.backend.as_str(),
                c.negotiated.as_deref(),
                c.connects,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "ECDHE-ECDSA-AES128-SHA",
                "openssl",
                Some("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
                2
            ),
            (
                "AES256-GCM-SHA384",
                "openssl",
                Some("TLSv1.2 TLS_RSA_WITH_AES_256_GCM_SHA384"),
                2
            ),
        ]
    );
    assert_eq!(cells[1].server_key, "rsa2048-sha256");
    assert_eq!(
        cells[1].kx_group, None,
        "static RSA has no key exchange group"
    );
    for c in &cells {
        assert_eq!((c.handshakes_ok, c.handshakes), (3, 3));
        assert!(c.client_cpu_ms.is_some_and(|ms| ms > 0.0), "{c:?}");
        assert!(c.connect_ms_p50.is_some(), "{c:?}");
        assert!(c.failures.is_empty(), "{c:?}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("TLS_RSA_WITH_AES_256_GCM_SHA384") && table.contains("cpu ms/hs"),
        "{table}"
    );
}

#[test]
fn a_bad_suite_is_bad_input() {
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(["tls-matrix", "--cipher-suite", "RC4-MD5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"RC4-MD5\" is not a cipher suite name"),
        "{stderr}"
    );
}
