//! What one mTLS handshake costs the device side when there is no network and no runtime:
//! thingswarm's rustls client config against an in-memory rustls server, one thread, printed
//! as JSON.
//!
//! `cargo bench --bench handshake -- [--rounds N]` (default 2,000 per cell).
//!
//! Each round builds the device's TLS config as a fleet does (its key loaded, the shared
//! verifier with its chain cache) and runs a full TLS handshake, client certificate included,
//! by passing records between a `ClientConnection` and a `ServerConnection` in memory. Only the
//! client's calls are timed (wall time on one thread; the machine's other core takes the noise),
//! so `client_ms` is rustls's and aws-lc's share of `connect_storm`'s `ramp_cpu_ms_per_connect`:
//! the rest of that figure is sockets, the kernel's loopback TCP, tokio and MQTT. The cells
//! differ in what the broker would choose: mosquitto prefers TLS_AES_256_GCM_SHA384 (server
//! order) with a P-256 certificate; AWS IoT Core presents an RSA or an ECC chain depending on
//! the negotiated suite.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use thingswarm::identity::{cache, server::server_identity_with, Algorithm, Fleet, FleetSpec};
use thingswarm::tls::device::DeviceTls;
use thingswarm::tls::options::{TlsOptions, TlsVersion};
use thingswarm::tls::{install_crypto_provider, ServerTrust};

/// One broker choice: the suite and version the device offers, and the server's key type.
struct Cell {
    name: &'static str,
    version: TlsVersion,
    suite: &'static str,
    server_key: Algorithm,
}

fn main() {
    let mut rounds = 2000u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--rounds N");
        }
    }
    install_crypto_provider();
    let tmp = tempfile::tempdir().unwrap();
    // A few hundred distinct identities, cycled: each round loads a different key, as devices do.
    let spec = FleetSpec::new("hs-{index:04}").unwrap();
    let fleet = cache::ensure(tmp.path(), &spec, 256, false).unwrap().0;

    let p256 = Algorithm::EcdsaP256Sha256;
    let rsa = "rsa2048-sha256".parse::<Algorithm>().unwrap();
    let cells = [
        Cell {
            name: "tls13_aes256_sha384_p256_server",
            version: TlsVersion::V1_3,
            suite: "TLS_AES_256_GCM_SHA384",
            server_key: p256,
        },
        Cell {
            name: "tls13_aes128_sha256_p256_server",
            version: TlsVersion::V1_3,
            suite: "TLS_AES_128_GCM_SHA256",
            server_key: p256,
        },
        Cell {
            name: "tls12_ecdhe_ecdsa_aes128_gcm_p256_server",
            version: TlsVersion::V1_2,
            suite: "ECDHE-ECDSA-AES128-GCM-SHA256",
            server_key: p256,
        },
        Cell {
            name: "tls13_aes256_sha384_rsa2048_server",
            version: TlsVersion::V1_3,
            suite: "TLS_AES_256_GCM_SHA384",
            server_key: rsa,
        },
    ];
    let results: serde_json::Map<String, serde_json::Value> = cells
        .iter()
        .map(|cell| {
            let dir = tmp.path().join(cell.name);
            (cell.name.to_string(), measure(cell, &fleet, &dir, rounds))
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "bench": "handshake", "rounds": rounds, "cells": results })
    );
}

/// Client time per handshake in one cell: the median of ten batches, and the fastest batch.
fn measure(cell: &Cell, fleet: &Fleet, dir: &Path, rounds: u32) -> serde_json::Value {
    let (server, server_ca) = server_config(cell.server_key, fleet, dir);
    let options = TlsOptions {
        versions: vec![cell.version],
        suites: vec![cell.suite.to_string()],
        ..Default::default()
    };
    let trust = ServerTrust::roots(&[server_ca])
        .unwrap()
        .with_options(&options);
    let name = ServerName::try_from("localhost").unwrap();

    // Warm-up: the chain cache fills, as it does on a fleet's first connect.
    handshake(&trust, fleet, 0, &server, &name);
    let batches = 10;
    let per_batch = (rounds / batches).max(1);
    let mut batch_ms: Vec<f64> = (0..batches)
        .map(|b| {
            let mut client = Duration::ZERO;
            for i in 0..per_batch {
                client += handshake(&trust, fleet, (b * per_batch + i) as usize, &server, &name);
            }
            client.as_secs_f64() * 1e3 / f64::from(per_batch)
        })
        .collect();
    batch_ms.sort_by(f64::total_cmp);
    serde_json::json!({
        "client_ms": batch_ms[batch_ms.len() / 2],
        "client_ms_fastest_batch": batch_ms[0],
    })
}

/// One full handshake; returns the time spent in the client's calls.
fn handshake(
    trust: &ServerTrust,
    fleet: &Fleet,
    round: usize,
    server: &Arc<ServerConfig>,
    name: &ServerName<'static>,
) -> Duration {
    let index = round % fleet.len();
    let mut spent = Duration::ZERO;
    let mut timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        spent += start.elapsed();
    };
    let mut client = None;
    timed(&mut || {
        let id = fleet.client_id(index);
        let key = fleet.key(index).clone_key();
        let DeviceTls::Rustls { config, .. } =
            trust.device_tls(&id, fleet.cert_chain(index), key).unwrap()
        else {
            panic!("a P-256 identity runs on rustls");
        };
        client = Some(ClientConnection::new(config, name.clone()).unwrap());
    });
    let mut client = client.unwrap();
    let mut server = ServerConnection::new(server.clone()).unwrap();
    let mut wire = Vec::with_capacity(8192);
    while client.is_handshaking() || server.is_handshaking() {
        wire.clear();
        timed(&mut || {
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
        });
        if !wire.is_empty() {
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            timed(&mut || {
                let mut rd = wire.as_slice();
                while !rd.is_empty() {
                    client.read_tls(&mut rd).unwrap();
                    client.process_new_packets().unwrap();
                }
            });
        }
    }
    spent
}

/// A broker's side: a fresh throwaway chain of `key` type, client certificates required and
/// verified against the fleet's root. Each cell's client offers one suite, so the server's
/// order does not matter. No session tickets: the loop ends with the handshake, and a device
/// has resumption off anyway. Returns the config and the CA that devices trust for it.
fn server_config(
    key: Algorithm,
    fleet: &Fleet,
    dir: &Path,
) -> (Arc<ServerConfig>, CertificateDer<'static>) {
    let id = server_identity_with(dir, key).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        thingswarm::identity::read_pem_certs(&id.cert_pem, None).unwrap();
    let key_pem = pem::parse(std::fs::read(&id.key_pem).unwrap()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pem.into_contents()));
    let mut roots = RootCertStore::empty();
    roots.add(fleet.root().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.send_tls13_tickets = 0;
    (Arc::new(config), id.ca_der)
}
