//! Outbound HTTP for every ATCR component: one TLS provider for the whole
//! process (rustls with ring; no C build), and client defaults.

use std::time::Duration;

/// Installs the ring rustls provider as the process default (idempotent).
/// Must run before any `reqwest` client is built; [`client_builder`] does it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client builder with ATCR's defaults: the TLS provider installed,
/// `timeout` for connect and whole requests, at most 3 redirects.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("atcr/", env!("CARGO_PKG_VERSION")))
}

/// A client with ATCR's defaults.
///
/// # Panics
/// Only if the TLS backend cannot initialise, which the ring provider cannot fail to do.
pub fn client(timeout: Duration) -> reqwest::Client {
    client_builder(timeout)
        .build()
        .expect("HTTP client with the ring provider builds")
}
