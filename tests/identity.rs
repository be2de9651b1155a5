//! The identity factory against OpenSSL: every algorithm, intermediates, bring-your-own CA,
//! and the cache's reuse / growth / permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use thingswarm::identity::{cache, Algorithm, CaSource, FleetSpec};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn thingswarm(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("thingswarm")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// openssl's name for the signature each algorithm must put on device certificates.
fn openssl_sig_name(alg: Algorithm) -> &'static str {
    match alg.seed_name() {
        "ECDSA-WITH-SHA256" => "ecdsa-with-SHA256",
        "ECDSA-WITH-SHA384" => "ecdsa-with-SHA384",
        "ECDSA-WITH-SHA512" => "ecdsa-with-SHA512",
        "SHA256WITHRSA" => "sha256WithRSAEncryption",
        "SHA384WITHRSA" => "sha384WithRSAEncryption",
        "SHA512WITHRSA" => "sha512WithRSAEncryption",
        other => panic!("unexpected {other}"),
    }
}

/// Issues two devices with `alg` (root or root -> intermediate), exports them as PEM and checks
/// them with openssl: chain verifies, clientAuth, signature algorithm, subject, key parses and
/// matches the certificate.
fn check_algorithm(alg: Algorithm, intermediate: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let mut spec = FleetSpec::new("dev-{index:03}").unwrap();
    spec.algorithm = alg;
    spec.ca = CaSource::Generated { intermediate };
    let (fleet, report) = cache::ensure(&certs, &spec, 2, false).unwrap();
    assert_eq!((fleet.len(), report.generated), (2, 2));
    assert_eq!(fleet.intermediates().len(), usize::from(intermediate));

    let out = tmp.path().join("export");
    let (code, _, err) = thingswarm(&[
        "certs",
        "export",
        "--certs-dir",
        path(&certs),
        "--out",
        path(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    for (i, id) in ["dev-000", "dev-001"].iter().enumerate() {
        assert_eq!(fleet.client_id(i), *id);
        let dir = out.join(id);
        let (cert, key, chain) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("chain.pem"),
        );
        let (ok, text) = openssl(&[
            "verify",
            "-CAfile",
            path(&out.join("root.pem")),
            "-untrusted",
            path(&chain),
            "-purpose",
            "sslclient",
            path(&cert),
        ]);
        assert!(ok, "{alg} intermediate={intermediate}: {text}");
        let (_, text) = openssl(&["x509", "-in", path(&cert), "-noout", "-text"]);
        assert!(
            text.contains(&format!("Signature Algorithm: {}", openssl_sig_name(alg))),
            "{alg}: {text}"
        );
        assert!(
            text.contains("TLS Web Client Authentication"),
            "{alg}: {text}"
        );
        assert!(
            text.contains(&format!("Subject: CN={id}"))
                || text.contains(&format!("Subject: CN = {id}")),
            "{text}"
        );
        assert!(text.contains(&format!("DNS:{id}")), "{text}");
        let (ok, key_pub) = openssl(&["pkey", "-in", path(&key), "-pubout"]);
        assert!(ok, "{alg}: key does not parse: {key_pub}");
        let (_, cert_pub) = openssl(&["x509", "-in", path(&cert), "-noout", "-pubkey"]);
        assert_eq!(key_pub, cert_pub, "{alg}: key does not match certificate");
    }
}

#[test]
fn every_algorithm_verifies_with_openssl_direct_and_through_an_intermediate() {
    // RSA-4096 keys take about a second each: spread the algorithms over threads.
    std::thread::scope(|s| {
        for alg in thingswarm::identity::algorithm::ALL {
            s.spawn(move || check_algorithm(alg, false));
            s.spawn(move || check_algorithm(alg, true));
        }
    });
}

#[test]
fn serials_are_unique_and_client_ids_follow_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = FleetSpec::new("sensor-{index:05}").unwrap();
    let (fleet, _) = cache::ensure(tmp.path(), &spec, 500, false).unwrap();
    let mut serials = std::collections::HashSet::new();
    for i in 0..fleet.len() {
        let der = fleet.cert(i);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(serials.insert(cert.raw_serial().to_vec()));
        assert_eq!(cert.subject().to_string(), format!("CN=sensor-{i:05}"));
        assert_eq!(fleet.client_id(i), format!("sensor-{i:05}"));
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn cache_reuses_grows_by_the_delta_and_keeps_keys_private() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let spec = FleetSpec::new("dev-{index:04}").unwrap();

    let (first, r1) = cache::ensure(&certs, &spec, 100, false).unwrap();
    assert_eq!((r1.reused, r1.generated), (0, 100));
    let (again, r2) = cache::ensure(&certs, &spec, 100, false).unwrap();
    assert_eq!((r2.reused, r2.generated), (100, 0));
    assert_eq!(first.cert(42).as_ref(), again.cert(42).as_ref());
    let (grown, r3) = cache::ensure(&certs, &spec, 250, false).unwrap();
    assert_eq!((r3.reused, r3.generated), (100, 150));
    assert_eq!(grown.cert(99).as_ref(), first.cert(99).as_ref());
    let (fewer, r4) = cache::ensure(&certs, &spec, 10, false).unwrap();
    assert_eq!((fewer.len(), r4.generated), (10, 0));

    // A changed parameter is another fleet: nothing reused.
    let mut longer = spec.clone();
    longer.validity_days = 30;
    let (other, r5) = cache::ensure(&certs, &longer, 10, false).unwrap();
    assert_eq!(r5.generated, 10);
    assert_ne!(other.meta().id, grown.meta().id);

    // A crash mid-append leaves a partial record: it is dropped and regenerated, nothing else.
    let bundle = grown.dir().join("identities.bin");
    let len = std::fs::metadata(&bundle).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bundle)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (healed, r6) = cache::ensure(&certs, &spec, 250, false).unwrap();
    assert_eq!((r6.reused, r6.generated), (249, 1));
    assert_eq!(healed.cert(248).as_ref(), grown.cert(248).as_ref());

    for dir in [
        certs.join("ca"),
        certs.join("ca/ecdsa-p256-sha256"),
        certs.join("fleets"),
        grown.dir().to_path_buf(),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        certs.join("ca/ecdsa-p256-sha256/key.pem"),
        bundle,
        grown.dir().join("fleet.json"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn cli_reports_reuse_and_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = path(tmp.path());
    let args = |n: &'static str| {
        [
            "certs",
            "issue",
            "--certs-dir",
            dir,
            "--count",
            n,
            "--client-id",
            "c-{index}",
        ]
    };
    let (code, out, err) = thingswarm(&args("20"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 reused, 20 generated"), "{out}");
    let (_, out, _) = thingswarm(&args("20"));
    assert!(out.contains("20 reused, 0 generated"), "{out}");
    let (_, out, _) = thingswarm(&args("30"));
    assert!(out.contains("20 reused, 10 generated"), "{out}");
    let (code, out, _) = thingswarm(&["certs", "list", "--certs-dir", dir]);
    assert_eq!(code, 0);
    assert!(out.contains("c-{index}") && out.contains("30"), "{out}");
    let (code, out, _) = thingswarm(&["certs", "inspect", "--certs-dir", dir, "--index", "7"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("CN=c-7") && out.contains("clientAuth"),
        "{out}"
    );
}

/// Creates an OpenSSL CA (so the test does not trust our own code to make it).
fn openssl_ca(dir: &Path, name: &str, ca: bool) -> (String, String) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let ext = if ca {
        "basicConstraints=critical,CA:TRUE"
    } else {
        "basicConstraints=critical,CA:FALSE"
    };
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        &format!("/O=Example Corp/CN={name}"),
        "-addext",
        ext,
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
    ]);
    assert!(ok, "{text}");
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

#[test]
fn bring_your_own_ca_signs_devices_that_openssl_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(tmp.path(), "my-root", true);
    let certs = tmp.path().join("certs");
    let (code, out, err) = thingswarm(&[
        "certs",
        "issue",
        "--certs-dir",
        path(&certs),
        "--count",
        "3",
        "--ca-cert",
        &cert,
        "--ca-key",
        &key,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 generated"), "{out}");
    let export = tmp.path().join("out");
    let (code, _, err) = thingswarm(&[
        "certs",
        "export",
        "--certs-dir",
        path(&certs),
        "--out",
        path(&export),
    ]);
    assert_eq!(code, 0, "{err}");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &cert,
        path(&export.join("device-00002/cert.pem")),
    ]);
    assert!(ok, "{text}");
}

#[test]
fn bring_your_own_ca_refuses_bad_input_with_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(tmp.path(), "root-a", true);
    let (_, other_key) = openssl_ca(tmp.path(), "root-b", true);
    let (leaf, leaf_key) = openssl_ca(tmp.path(), "leaf", false);
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let certs = tmp.path().join("certs");
    let cases = [
        (
            cert.as_str(),
            other_key.as_str(),
            other_key.as_str(),
            "does not match",
        ),
        (
            leaf.as_str(),
            leaf_key.as_str(),
            leaf.as_str(),
            "is not a CA",
        ),
        (
            path(&garbage),
            key.as_str(),
            path(&garbage),
            "no `-----BEGIN CERTIFICATE-----` block",
        ),
        (
            cert.as_str(),
            path(&garbage),
            path(&garbage),
            "unreadable private key",
        ),
        (
            cert.as_str(),
            "/nonexistent/key.pem",
            "/nonexistent/key.pem",
            "No such file",
        ),
    ];
    for (ca_cert, ca_key, named, needle) in cases {
        let (code, out, err) = thingswarm(&[
            "certs",
            "issue",
            "--certs-dir",
            path(&certs),
            "--count",
            "1",
            "--ca-cert",
            ca_cert,
            "--ca-key",
            ca_key,
        ]);
        assert_eq!(code, 2, "{needle}: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(named) && err.contains(needle),
            "{needle}: {err}"
        );
    }
}

#[test]
fn unsupported_and_unknown_algorithms_are_clear_errors() {
    let (code, _, err) = thingswarm(&[
        "certs",
        "issue",
        "--count",
        "1",
        "--algorithm",
        "rsa2048-pss-sha512",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not supported yet"), "{err}");
    let (code, _, err) = thingswarm(&["certs", "issue", "--count", "1", "--algorithm", "ed448"]);
    assert_eq!(code, 2);
    assert!(err.contains("ecdsa-p256-sha256"), "{err}");
    let (code, _, err) = thingswarm(&["certs", "issue", "--count", "5", "--client-id", "same"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no {index}"), "{err}");
}

#[test]
fn merge_of_a_missing_shard_directory_exits_2_naming_it() {
    let (code, _, err) = thingswarm(&["merge", "--out", "x-out", "x-missing"]);
    assert_eq!(code, 2);
    assert!(err.contains("x-missing"), "{err}");
}

/// A shard keeps only its devices' identities; the others' bytes are freed, indices unchanged.
#[test]
fn a_fleet_keeps_only_the_identities_a_shard_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = FleetSpec::new("shard-{index:02}").unwrap();
    let (whole, _) = cache::ensure(tmp.path(), &spec, 9, false).unwrap();
    let (mut part, _) = cache::ensure(tmp.path(), &spec, 9, false).unwrap();
    part.retain(|k| k % 3 == 1);
    assert_eq!(part.len(), 9);
    for i in 0..9 {
        if i % 3 == 1 {
            assert_eq!(part.cert(i), whole.cert(i));
            assert_eq!(part.key(i).secret_der(), whole.key(i).secret_der());
            assert_eq!(part.client_id(i), whole.client_id(i));
        } else {
            assert!(part.cert(i).is_empty() && part.key(i).secret_der().is_empty());
        }
    }
}
