use std::{sync::Arc, time::Duration};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{testing::Ca, *};
use crate::export::otlp::{
    Compression, Protocol, SignalConfig,
    transport::{Failure, Transport},
};

/// A TLS server on 127.0.0.1 that completes handshakes (or fails them) and
/// then drops the connection; its port. With `client_ca` it requires a
/// client certificate that CA signed.
async fn tls_server(ca: &Ca, names: &[&str], client_ca: Option<&Ca>) -> u16 {
    let leaf = ca.server(names);
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(client_ca) => {
            let roots = Arc::new(root_store(&[client_ca.der()]).unwrap());
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider()).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(vec![leaf.certificate], leaf.key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    port
}

fn config(protocol: Protocol, endpoint: String, ca: &Ca) -> SignalConfig {
    SignalConfig {
        endpoint,
        protocol,
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
        compression: Compression::None,
        tls: Some(TlsConfig { ca_certificates: Some(vec![ca.der()]), client_identity: None }),
    }
}

/// One export attempt's failure reason, which the export warning carries.
async fn failure(config: &SignalConfig) -> String {
    match Transport::new(config).traces(&ExportTraceServiceRequest::default()).await {
        Err(Failure::Retryable { reason, .. }) => reason,
        Err(Failure::Permanent { reason }) => panic!("not retried: {reason}"),
        Ok(_) => panic!("exported over {config:?}"),
    }
}

fn url(protocol: Protocol, host: &str, port: u16) -> String {
    match protocol {
        Protocol::Grpc => format!("https://{host}:{port}"),
        Protocol::HttpProtobuf => format!("https://{host}:{port}/v1/traces"),
    }
}

#[tokio::test]
async fn export_tls_wrong_ca_or_name_fails_saying_why() {
    let (server_ca, other_ca) = (Ca::new("server CA"), Ca::new("another CA"));
    let port = tls_server(&server_ca, &["localhost"], None).await;
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let reason = failure(&config(protocol, url(protocol, "localhost", port), &other_ca)).await;
        assert!(reason.contains("invalid peer certificate: UnknownIssuer"), "{protocol:?}: {reason}");
        // The right CA, but the certificate is for localhost only.
        let reason = failure(&config(protocol, url(protocol, "127.0.0.1", port), &server_ca)).await;
        assert!(
            reason.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
            "{protocol:?}: {reason}"
        );
    }
}

#[tokio::test]
async fn export_mtls_without_a_trusted_client_certificate_fails_saying_why() {
    let ca = Ca::new("ca");
    let port = tls_server(&ca, &["localhost"], Some(&ca)).await;
    let stranger = Ca::new("stranger").client("kscope");
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let mut config = config(protocol, url(protocol, "localhost", port), &ca);
        let reason = failure(&config).await;
        assert!(reason.contains("received fatal alert: CertificateRequired"), "{protocol:?}: {reason}");
        config.tls.as_mut().unwrap().client_identity = Some(ClientIdentity {
            certificate_chain: vec![stranger.certificate.clone()],
            key: stranger.key.clone_key(),
        });
        let reason = failure(&config).await;
        assert!(reason.contains("received fatal alert: UnknownCA"), "{protocol:?}: {reason}");
    }
}

#[tokio::test]
async fn export_tls_to_a_plaintext_server_fails_saying_why() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let ca = Ca::new("ca");
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let reason = failure(&config(protocol, url(protocol, "127.0.0.1", port), &ca)).await;
        assert!(reason.contains("InvalidContentType"), "{protocol:?}: {reason}");
    }
}

#[test]
fn export_tls_system_roots_are_found() {
    // Debian's ca-certificates, which the project's machines have.
    let roots = system_roots().unwrap();
    assert!(roots.len() > 10, "{} roots", roots.len());
    assert!(client_config(&TlsConfig::default()).is_ok());
}

#[test]
fn export_tls_client_config_announces_nothing_itself() {
    // hyper-rustls sets ALPN (h2 for gRPC, http/1.1 for HTTP) and refuses a
    // configuration that already has some.
    let ca = Ca::new("ca");
    let client = ca.client("kscope");
    let tls = TlsConfig {
        ca_certificates: Some(vec![ca.der()]),
        client_identity: Some(ClientIdentity { certificate_chain: vec![client.certificate], key: client.key }),
    };
    assert!(client_config(&tls).unwrap().alpn_protocols.is_empty());
    assert!(connector(Some(&tls), Alpn::H2).is_ok());
    assert!(connector(None, Alpn::Http1).is_ok());
}

#[test]
fn export_tls_pem_parsing() {
    let ca = Ca::new("ca");
    assert_eq!(parse_certificates(ca.pem().as_bytes()), Ok(vec![ca.der()]));
    let client = ca.client("kscope");
    assert_eq!(parse_key(client.key_pem.as_bytes()), Ok(client.key.clone_key()));
    // PKCS#1 and SEC1 keys are taken too: only the label differs here.
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    assert!(matches!(parse_key(sec1.as_bytes()), Ok(PrivateKeyDer::Sec1(_))));
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert_eq!(
        parse_key(encrypted.as_bytes()),
        Err("no unencrypted PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY in the PEM file".to_owned())
    );
}
