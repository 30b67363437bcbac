//! Whether a restarted etcd member or kube-apiserver serves again: an HTTPS GET of its health
//! endpoint (etcd `/health`, kube-apiserver `/livez`) over mutual TLS, the server verified
//! against the CA in the cert dir and the client authenticated with a (renewed) client
//! certificate. Addresses and ports come from the static pod manifest.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::listener::{Process, listener};
use super::restart::flag_value;
use crate::layout::Layout;

/// Where and how to ask a component whether it is healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `host:port`.
    pub address: String,
    /// Host name or IP the server certificate must carry.
    pub host: String,
    /// Request path.
    pub path: &'static str,
    /// CA that signs the server certificate.
    pub ca: PathBuf,
    /// Client certificate and key.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
    /// The server certificate file: the component counts as restarted only once it presents
    /// exactly this certificate (so a not yet restarted process is not taken for the new one).
    pub server_cert: PathBuf,
}

/// The probe of `component` from its manifest text, `None` for components that have no TLS
/// health endpoint autopilot checks (kube-controller-manager, kube-scheduler).
pub fn probe_for(component: &str, manifest: &str, layout: &Layout) -> Option<Probe> {
    match component {
        "etcd" => {
            let urls = flag_value(manifest, "listen-client-urls")?;
            let url = urls.split(',').find(|u| u.starts_with("https://"))?;
            let hostport = url.trim_start_matches("https://").trim_end_matches('/');
            let host = host_of(hostport);
            Some(Probe {
                address: hostport.to_owned(),
                host,
                path: "/health",
                ca: layout.cert_dir.join("etcd/ca.crt"),
                cert: layout.cert_dir.join("etcd/healthcheck-client.crt"),
                key: layout.cert_dir.join("etcd/healthcheck-client.key"),
                server_cert: layout.cert_dir.join("etcd/server.crt"),
            })
        }
        "kube-apiserver" => {
            let host = flag_value(manifest, "advertise-address")?;
            let port = flag_value(manifest, "secure-port").unwrap_or_else(|| "6443".to_owned());
            let address = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Some(Probe {
                address,
                host,
                path: "/livez",
                ca: layout.crt("ca"),
                cert: layout.crt("apiserver-kubelet-client"),
                key: layout.key("apiserver-kubelet-client"),
                server_cert: layout.crt("apiserver"),
            })
        }
        _ => None,
    }
}

pub(crate) fn host_of(hostport: &str) -> String {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_owned()
}

/// An open TLS connection to the running process, taken before its manifest changes: the old
/// process going away closes it. (etcd reloads its certificate files on every handshake, so a
/// new certificate being served does not by itself prove a restart.)
pub struct Watch {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    /// The process listening before the manifest changed, when `/proc` tells.
    before: Option<Process>,
}

/// Connects to the running process; `Err` when it does not accept a connection now.
pub fn watch(probe: &Probe) -> Result<Watch, String> {
    let mut tls = connect(probe)?;
    // Complete the handshake; nothing is requested, so the server keeps the connection open.
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    Ok(Watch {
        tls,
        before: listener(&probe.address),
    })
}

impl Watch {
    /// Whether the server side has closed the connection (the process exited).
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        match self.tls.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// Waits for the restart the manifest change asked for: the connection `watch` held to the old
/// process must close (when there was one), then the component must answer healthy presenting
/// the certificate on disk. Each wait is bounded by `timeout`.
pub fn wait_restarted(
    probe: &Probe,
    watch: Option<Watch>,
    timeout: Duration,
) -> Result<(), String> {
    let mut before = None;
    if let Some(mut w) = watch {
        before = w.before;
        let deadline = Instant::now() + timeout;
        while !w.closed() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} kept running for {timeout:?} after its manifest changed: not restarted (is the kubelet running?)",
                    probe.address
                ));
            }
        }
    }
    // The connection may also close for other reasons: another process must be listening too.
    let deadline = Instant::now() + timeout;
    loop {
        wait_healthy(probe, deadline.saturating_duration_since(Instant::now()))?;
        match (before, listener(&probe.address)) {
            (Some(old), Some(now)) if old == now => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} is still served by the process that ran before its manifest changed (pid {}): not restarted",
                        probe.address, old.pid
                    ));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            _ => return Ok(()),
        }
    }
}

/// Polls the probe until it answers 200 or `timeout` passes; `Err` carries the last failure.
pub fn wait_healthy(probe: &Probe, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let err = match check(probe) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{} not healthy after {timeout:?}: {err}",
                probe.address
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One health request.
pub fn check(probe: &Probe) -> Result<(), String> {
    let (presented, text) = exchange(probe, "GET", probe.path, None)?;
    let on_disk = CertificateDer::pem_file_iter(&probe.server_cert)
        .ok()
        .and_then(|mut it| it.next())
        .and_then(Result::ok);
    if presented.is_none() || presented != on_disk {
        return Err(format!(
            "serves a certificate other than {} (not restarted yet?)",
            probe.server_cert.display()
        ));
    }
    healthy_answer(probe.path, &text)
}

/// Whether an HTTP answer to a health request says healthy (etcd also in its body).
pub(crate) fn healthy_answer(path: &str, text: &str) -> Result<(), String> {
    let status_ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let etcd_unhealthy = path == "/health" && !body.contains("\"health\":\"true\"");
    if status_ok && !etcd_unhealthy {
        Ok(())
    } else {
        Err(format!(
            "answered {:?}",
            text.lines().next().unwrap_or_default()
        ))
    }
}

/// One HTTP/1.1 request over mutual TLS to the probe's address: the certificate the server
/// presented and the whole answer (status line, headers, body).
pub(crate) fn exchange(
    probe: &Probe,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(Option<CertificateDer<'static>>, String), String> {
    let mut tls = connect(probe)?;
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        probe.host,
        body.len()
    );
    tls.write_all(req.as_bytes())
        .map_err(|e| format!("TLS: {e}"))?;
    let mut resp = Vec::new();
    match tls.read_to_end(&mut resp) {
        Ok(_) => {}
        // Servers that close without close_notify still sent a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
        Err(e) => return Err(format!("TLS: {e}")),
    }
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned());
    Ok((presented, String::from_utf8_lossy(&resp).into_owned()))
}

/// A TLS client stream to the probe's address (handshake happens on first IO).
fn connect(
    probe: &Probe,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let config = client_config(&probe.ca, &probe.cert, &probe.key)?;
    let name = ServerName::try_from(probe.host.clone()).map_err(|e| format!("server name: {e}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = probe
        .address
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", probe.address))?
        .next()
        .ok_or_else(|| format!("{}: no address", probe.address))?;
    let step = Duration::from_secs(5);
    let tcp = TcpStream::connect_timeout(&addr, step).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(step))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(step))
        .map_err(|e| e.to_string())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    // The key is read by rustls into its own buffer; its error never includes key bytes.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_from_kubeadm_manifests() {
        let layout = Layout::new("/k/pki", "/k");
        let etcd = "    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379\n";
        let p = probe_for("etcd", etcd, &layout).expect("etcd probe");
        assert_eq!(
            (p.address.as_str(), p.host.as_str()),
            ("127.0.0.1:2379", "127.0.0.1")
        );
        let api = "    - --advertise-address=10.0.0.1\n    - --secure-port=6443\n";
        let p = probe_for("kube-apiserver", api, &layout).expect("apiserver probe");
        assert_eq!(p.address, "10.0.0.1:6443");
        assert!(probe_for("kube-scheduler", api, &layout).is_none());
    }
}
