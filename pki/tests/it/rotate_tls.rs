//! Real mutual-TLS handshakes (rustls, aws-lc-rs provider, over 127.0.0.1) between old and new
//! client and server certificates across a CA rotation: while both CAs are trusted every
//! combination works; after `finish` only new credentials do.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::rotate_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use common::*;
use rotate_support::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(bundle: &Path) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(bundle).unwrap() {
        r.add(c.unwrap()).unwrap();
    }
    Arc::new(r)
}

fn chain(crt: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(crt)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

fn key(p: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(p).unwrap()
}

/// A server presenting `cert` that requires a client certificate chaining to `bundle`.
fn server_config(cert: &Path, key_path: &Path, bundle: &Path) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(bundle), provider())
        .build()
        .unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain(cert), key(key_path))
            .unwrap(),
    )
}

/// A client presenting `cert` that trusts servers chaining to `bundle`.
fn client_config(cert: &Path, key_path: &Path, bundle: &Path) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(bundle))
            .with_client_auth_cert(chain(cert), key(key_path))
            .unwrap(),
    )
}

/// One request/response over mutual TLS; `Err` describes which side refused.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = std::thread::spawn(move || -> Result<(), String> {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let conn = ServerConnection::new(server).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .map_err(|e| format!("server: {e}"))?;
        tls.write_all(b"pong").map_err(|e| format!("server: {e}"))?;
        tls.flush().map_err(|e| format!("server: {e}"))?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(())
    });
    let client_result = (|| -> Result<(), String> {
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sn = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(client, sn).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"ping").map_err(|e| format!("client: {e}"))?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .map_err(|e| format!("client: {e}"))?;
        if &buf != b"pong" {
            return Err("client: bad reply".into());
        }
        Ok(())
    })();
    let server_result = srv.join().unwrap();
    client_result.and(server_result)
}

struct Pair<'a> {
    label: &'a str,
    crt: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn pair<'a>(label: &'a str, dir: &Path, base: &str) -> Pair<'a> {
    Pair {
        label,
        crt: dir.join(format!("{base}.crt")),
        key: dir.join(format!("{base}.key")),
    }
}

fn expect(bundle: &Path, client: &Pair, server: &Pair, name: &str, works: bool) {
    let r = handshake(
        server_config(&server.crt, &server.key, bundle),
        client_config(&client.crt, &client.key, bundle),
        name,
    );
    assert_eq!(
        r.is_ok(),
        works,
        "{} client <-> {} server with {}: {r:?}",
        client.label,
        server.label,
        bundle.display()
    );
}

/// The matrix for one CA: server leaf, client leaf and the name the client connects to.
fn rotation_matrix(t: T, server_base: &str, client_base: &str, name: &str) {
    let c = Cluster::initialized();
    let bundle = c.path(t.anchor());
    let old_dir = keep(&c, "old", &[server_base, client_base]);
    let (old_server, old_client) = (
        pair("old", &old_dir, server_base),
        pair("old", &old_dir, client_base),
    );
    expect(&bundle, &old_client, &old_server, name, true);

    // start: the bundle holds old+new, the leaves are still the old ones.
    ok(&rotate(&c, t, "start", &[]));
    expect(&bundle, &old_client, &old_server, name, true);
    // A verifier that has not loaded the bundle yet (old CA only) still accepts the old leaves.
    let old_ca_only = c.root().join("old-ca.crt");
    std::fs::write(&old_ca_only, pem_of(&bundle_views_der(&bundle)[0])).unwrap();
    expect(&old_ca_only, &old_client, &old_server, name, true);

    // switch: new leaves; every combination works while both CAs are trusted.
    ok(&rotate(&c, t, "switch", &[]));
    let new_dir = keep(&c, "new", &[server_base, client_base]);
    let (new_server, new_client) = (
        pair("new", &new_dir, server_base),
        pair("new", &new_dir, client_base),
    );
    for (cl, sv) in [
        (&old_client, &old_server),
        (&old_client, &new_server),
        (&new_client, &old_server),
        (&new_client, &new_server),
    ] {
        expect(&bundle, cl, sv, name, true);
    }

    // finish: only the new CA is trusted.
    ok(&rotate(&c, t, "finish", &[]));
    expect(&bundle, &new_client, &new_server, name, true);
    expect(&bundle, &old_client, &new_server, name, false);
    expect(&bundle, &new_client, &old_server, name, false);
}

fn bundle_views_der(p: &Path) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(&read(p))
        .map(|b| b.unwrap().contents)
        .collect()
}

#[test]
fn cluster_ca_rotation_mutual_tls_matrix() {
    // kube-apiserver's serving certificate and its kubelet client certificate.
    rotation_matrix(
        T::Ca,
        "apiserver",
        "apiserver-kubelet-client",
        "kubernetes.default.svc",
    );
}

#[test]
fn etcd_ca_rotation_mutual_tls_matrix() {
    // etcd's serving certificate and kube-apiserver's etcd client certificate.
    rotation_matrix(T::Etcd, "etcd/server", "apiserver-etcd-client", "localhost");
}
