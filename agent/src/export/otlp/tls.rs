//! TLS for `https://` endpoints: rustls with the ring provider, one client
//! configuration and connector type shared by the gRPC and HTTP transports.
//!
//! PEM files are read and checked when the configuration is resolved
//! ([`config`](super::config)); the system's root certificates are loaded
//! once, by the first transport that needs them.

use std::sync::{Arc, OnceLock};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{
    ClientConfig, RootCertStore,
    crypto::{CryptoProvider, ring},
    pki_types::{
        CertificateDer, PrivateKeyDer,
        pem::{self, PemObject as _},
    },
};

use super::config::{CERTIFICATE, ClientIdentity, TlsConfig};

/// The connector both transports use: plain TCP for `http://`, TLS over it
/// for `https://`.
pub(super) type Connector = HttpsConnector<HttpConnector>;

/// Which protocol the connection carries, announced with ALPN: gRPC needs
/// `h2` (gRPC servers refuse TLS connections without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alpn {
    H2,
    Http1,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(ring::default_provider())))
}

/// The connector for one signal: TLS configured by `tls`, or plain TCP when
/// `tls` is `None` (an `http://` endpoint).
pub(super) fn connector(tls: Option<&TlsConfig>, alpn: Alpn) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    // The scheme is the TLS layer's business.
    http.enforce_http(false);
    http.set_nodelay(true);
    let builder = HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(tls) => builder.with_tls_config(client_config(tls)?).https_only(),
        // Never used for TLS: the endpoint is http.
        None => {
            builder.with_tls_config(builder_with_roots(RootCertStore::empty())?.with_no_client_auth()).https_or_http()
        }
    };
    Ok(match alpn {
        Alpn::H2 => builder.enable_http2().wrap_connector(http),
        Alpn::Http1 => builder.enable_http1().wrap_connector(http),
    })
}

/// A rustls client configuration: the configured CA certificates, else the
/// system's roots, and the client identity for mTLS if any.
pub(super) fn client_config(tls: &TlsConfig) -> Result<ClientConfig, String> {
    let roots = match &tls.ca_certificates {
        Some(certificates) => Arc::new(root_store(certificates)?),
        None => system_roots()?,
    };
    let builder = builder_with_roots(roots)?;
    match &tls.client_identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.certificate_chain.clone(), identity.key.clone_key())
            .map_err(|e| format!("the client key and certificate: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn builder_with_roots(
    roots: impl Into<Arc<RootCertStore>>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots))
}

/// The certificates as trust anchors; each must be one.
pub(super) fn root_store(certificates: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for (i, certificate) in certificates.iter().enumerate() {
        store.add(certificate.clone()).map_err(|e| {
            // Its Display speaks of a peer's certificate: not this one.
            let why = match e {
                rustls::Error::InvalidCertificate(e) => format!("{e:?}"),
                e => e.to_string(),
            };
            format!("certificate {} of {} is not a usable CA certificate: {why}", i + 1, certificates.len())
        })?;
    }
    Ok(store)
}

/// Whether rustls can sign with the key: RSA, ECDSA P-256 or P-384, Ed25519.
pub(super) fn check_key(key: &PrivateKeyDer<'static>) -> Result<(), String> {
    provider().key_provider.load_private_key(key.clone_key()).map(drop).map_err(|e| match e {
        rustls::Error::General(message) => format!("{message}: not a key kscope can use"),
        e => e.to_string(),
    })
}

/// Whether the key is the certificate's (the key already checked).
pub(super) fn check_identity(identity: &ClientIdentity) -> Result<(), String> {
    builder_with_roots(RootCertStore::empty())?
        .with_client_auth_cert(identity.certificate_chain.clone(), identity.key.clone_key())
        .map(drop)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the key is not the certificate's".to_owned()
            }
            e => e.to_string(),
        })
}

/// Every `CERTIFICATE` in a PEM file; at least one.
pub(super) fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(pem_error)?;
    if certificates.is_empty() {
        return Err("no CERTIFICATE in the PEM file".to_owned());
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub(super) fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            "no unencrypted PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in the PEM file".to_owned()
        }
        e => pem_error(e),
    })
}

fn pem_error(e: pem::Error) -> String {
    let why = match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("no \"-----END {}-----\" line", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => format!("bad line {:?}", String::from_utf8_lossy(&line)),
        e => e.to_string(),
    };
    format!("not a valid PEM file: {why}")
}

/// The system's CA certificates (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else
/// OpenSSL's usual places such as /etc/ssl/certs), loaded once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _unusable) = store.add_parsable_certificates(found.certs);
            if added > 0 {
                return Ok(Arc::new(store));
            }
            let errors = found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            let errors = if errors.is_empty() { String::new() } else { format!(" ({errors})") };
            Err(format!(
                "no CA certificates found in the system's store{errors}: install ca-certificates, \
                 or name the collector's CA with {CERTIFICATE}"
            ))
        })
        .clone()
}

#[cfg(test)]
pub(super) mod testing;
#[cfg(test)]
mod tests;
