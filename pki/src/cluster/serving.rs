//! The certificate chain a TLS server presents, read without trusting it: the handshake is
//! completed, so the server proves it holds the presented certificate's key, and the chain is
//! handed to the caller to judge. Used for the kubelets' serving certificates before `ca finish`.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::inspect::Cert;

/// How long connecting and each read or write may take.
const STEP: Duration = Duration::from_secs(5);

/// Accepts any chain (the caller judges it) but checks the handshake's signatures against it.
#[derive(Debug)]
struct Presented {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Presented {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The chain the server at `address` (`host:port`) presents, leaf first.
pub fn presented_chain(address: &str) -> Result<Vec<Cert>, String> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Presented {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(address);
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("server name: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut tcp = TcpStream::connect_timeout(&addr, STEP).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(STEP))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(STEP))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let chain = conn
        .peer_certificates()
        .filter(|c| !c.is_empty())
        .ok_or("TLS: no certificate presented")?
        .iter()
        .map(|c| Cert::from_der(c.to_vec(), Path::new(address)).map_err(|e| e.to_string()))
        .collect();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use std::net::TcpListener;

    #[test]
    fn reads_the_chain_a_server_presents() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let der = cert.der().clone();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().expect("accept");
            let mut conn = rustls::ServerConnection::new(Arc::new(config)).expect("conn");
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    return;
                }
            }
            let _ = conn.complete_io(&mut tcp);
        });
        let chain = presented_chain(&addr.to_string()).expect("the chain");
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].der(), der.as_ref());
        server.join().expect("server thread");
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_hang() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let err = presented_chain(&format!("127.0.0.1:{port}")).expect_err("nothing listens");
        assert!(err.starts_with("connect:"), "{err}");
    }
}
