//! TLS for devices: one rustls `ClientConfig` per identity, shared by `Arc`.

/// Installs aws-lc-rs as the process-wide rustls crypto provider.
///
/// rmqtt pulls in quinn, which enables rustls's `ring` provider beside `aws-lc-rs`; with two
/// providers compiled in, `ClientConfig::builder()` panics unless one is installed. Call this
/// once at start-up (main, each test, each bench); later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
