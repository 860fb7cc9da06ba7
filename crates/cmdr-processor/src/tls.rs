//! TLS for cmdr's HTTP clients (webhook calls, the command line): rustls
//! with the `ring` provider, trusting the system's CA certificates plus any
//! given, e.g. a private CA's, read with [`read_certificates`].
//!
//! A machine without system CA certificates still gets a working client:
//! plain `http://` works, and `https://` fails at the handshake (the server's
//! certificate has no trusted issuer) unless its CA was given.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Reads every PEM certificate in `path` (a CA bundle or a single certificate).
///
/// # Errors
/// A message naming the file: unreadable, not PEM, or without a certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client configuration that trusts `extra` and the system's CA
/// certificates (those it can parse).
///
/// # Errors
/// When a certificate of `extra` is not a usable trust anchor.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a given CA certificate cannot be trusted: {e}"))?;
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::debug!("no system CA certificates found; https needs its CA given");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A `reqwest` client builder whose TLS is `config` (or, when `None`, a
/// [`client_config`] of the system's CA certificates alone).
///
/// # Errors
/// From [`client_config`].
pub fn client_builder(
    config: Option<&Arc<ClientConfig>>,
) -> Result<reqwest::ClientBuilder, String> {
    let config = match config {
        Some(c) => c.clone(),
        None => client_config(&[])?,
    };
    Ok(reqwest::Client::builder().tls_backend_preconfigured((*config).clone()))
}
