//! Helpers shared by the integration tests: running the real binary, openssl, and an
//! independent x509-parser view of certificates.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use x509_parser::extensions::{GeneralName, ParsedExtension};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_pki");

/// A temporary cluster: `<tmp>/pki` and `<tmp>` as kubeconfig dir.
pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    /// A new cluster after the usual test `pki init` ([`Cluster::init`] without extra flags).
    pub(crate) fn initialized() -> Self {
        Cluster::initialized_with(&[])
    }
    /// A new cluster after a successful [`Cluster::init`] with `extra` flags.
    pub(crate) fn initialized_with(extra: &[&str]) -> Self {
        let c = Cluster::new();
        ok(&c.init(extra));
        c
    }
    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }
    pub(crate) fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.pki().join(rel)
    }
    pub(crate) fn conf(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub(crate) fn dirs(&self) -> Vec<String> {
        vec![
            "--cert-dir".into(),
            self.pki().to_string_lossy().into(),
            "--kubeconfig-dir".into(),
            self.root().to_string_lossy().into(),
        ]
    }
    /// Arguments of `pki init` on this cluster's directories followed by `flags`.
    pub(crate) fn init_args(&self, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["init".into()];
        args.extend(self.dirs());
        args.extend(flags.iter().map(|s| s.to_string()));
        args
    }
    /// Arguments of the usual test `pki init`: [`NODE_FLAGS`], ECDSA-P256, then `extra`.
    pub(crate) fn default_init_args(&self, extra: &[&str]) -> Vec<String> {
        let mut flags = NODE_FLAGS.to_vec();
        flags.extend_from_slice(&["--encryption-algorithm", "ECDSA-P256"]);
        flags.extend_from_slice(extra);
        self.init_args(&flags)
    }
    /// `pki init` with ECDSA-P256 and the given extra args.
    pub(crate) fn init(&self, extra: &[&str]) -> Output {
        let args = self.default_init_args(extra);
        run(&args)
    }
    /// `openssl verify` (strict, with `purpose`) of `<leaf>.crt` against `<ca>.crt`, both
    /// relative to the cert dir.
    pub(crate) fn verify(&self, leaf: &str, ca: &str, purpose: Option<&str>) {
        openssl_verify(
            &self.path(&format!("{ca}.crt")),
            &self.path(&format!("{leaf}.crt")),
            purpose,
        );
    }
    /// The API server's serving certificate verifies against `ca.crt` as a TLS server.
    pub(crate) fn verify_apiserver(&self) {
        self.verify("apiserver", "ca", Some("sslserver"));
    }
    /// The contents of `files` (relative to the cert dir), in order.
    pub(crate) fn read_all(&self, files: &[&str]) -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(self.path(f)).unwrap())
            .collect()
    }
    /// Writes `yaml` (a kubeadm configuration) as `<root>/kubeadm.yaml`; its path.
    pub(crate) fn write_config(&self, yaml: &str) -> PathBuf {
        let f = self.root().join("kubeadm.yaml");
        std::fs::write(&f, yaml).unwrap();
        f
    }
    /// [`Cluster::cmd`] of `sub` followed by `extra` flags.
    pub(crate) fn cmd_with(&self, sub: &[&str], extra: &[&str]) -> Output {
        self.cmd(&[sub, extra].concat())
    }
    /// Runs a subcommand with `--cert-dir`/`--kubeconfig-dir` appended.
    pub(crate) fn cmd(&self, sub: &[&str]) -> Output {
        let mut args: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        args.extend(self.dirs());
        run(&args)
    }
}

/// The usual test node: `cp1`, advertising 192.168.10.5.
pub(crate) const NODE_FLAGS: &[&str] = &[
    "--node-name",
    "cp1",
    "--apiserver-advertise-address",
    "192.168.10.5",
];

/// The leaf certificates of kubeadm's set (bases relative to the cert dir).
pub(crate) const LEAF_BASES: &[&str] = &[
    "apiserver",
    "apiserver-kubelet-client",
    "apiserver-etcd-client",
    "front-proxy-client",
    "etcd/server",
    "etcd/peer",
    "etcd/healthcheck-client",
];

/// The files of the three CAs (certificate and key each, relative to the cert dir).
pub(crate) const CA_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
];

/// The kubeconfigs `pki init` writes.
pub(crate) const KUBECONFIGS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    "kubelet.conf",
];

/// The names `check-expiration` lists, sorted as kubeadm sorts them: the leaves and the
/// kubeconfigs kubeadm renews (no kubelet.conf).
pub(crate) const EXPIRATION_NAMES: &[&str] = &[
    "admin.conf",
    "apiserver",
    "apiserver-etcd-client",
    "apiserver-kubelet-client",
    "controller-manager.conf",
    "etcd-healthcheck-client",
    "etcd-peer",
    "etcd-server",
    "front-proxy-client",
    "scheduler.conf",
    "super-admin.conf",
];

pub(crate) fn run(args: &[String]) -> Output {
    testkit::output_of(Command::new(BIN).args(args))
}

/// Insists `out` (of the `pki` binary) is of a success; its stdout.
pub(crate) fn ok(out: &Output) -> String {
    testkit::assert_succeeded("pki", out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Insists `out` (of the `pki` binary) is of a failure; its stderr.
pub(crate) fn fails(out: &Output) -> String {
    testkit::assert_failed("pki", out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `openssl verify -x509_strict [-purpose P] -CAfile ca cert`; panics with openssl's output on failure.
pub(crate) fn openssl_verify(ca: &Path, cert: &Path, purpose: Option<&str>) {
    let mut c = Command::new("openssl");
    c.arg("verify").arg("-x509_strict");
    if let Some(p) = purpose {
        c.args(["-purpose", p]);
    }
    testkit::expect_success(c.arg("-CAfile").arg(ca).arg(cert));
}

pub(crate) fn openssl(args: &[&str]) -> Output {
    testkit::output_of(Command::new("openssl").args(args))
}

/// `openssl` with `args`, insisting it succeeds; its output.
pub(crate) fn openssl_ok(args: &[&str]) -> Output {
    testkit::expect_success(Command::new("openssl").args(args))
}

/// Public key (PEM SPKI) of a private key or certificate file, through openssl.
pub(crate) fn openssl_pubkey_of_key(key: &Path) -> String {
    let out = openssl_ok(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn openssl_pubkey_of_cert(cert: &Path) -> String {
    let out = openssl_ok(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    String::from_utf8(out.stdout).unwrap()
}

/// A self-signed EC P-256 CA made by openssl (`req -x509`, key unencrypted) with subject `subj`,
/// valid `days`, and `extra` arguments appended.
pub(crate) fn openssl_ca(key: &Path, crt: &Path, subj: &str, days: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-days",
        days,
        "-subj",
        subj,
    ];
    args.extend_from_slice(extra);
    openssl_ok(&args);
}

/// An independent view of a certificate, parsed with x509-parser.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub cn: String,
    pub orgs: Vec<String>,
    pub issuer_cn: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub other_sans: Vec<String>,
    pub is_ca: bool,
    pub has_basic_constraints: bool,
    pub ku_digital_signature: bool,
    pub ku_key_encipherment: bool,
    pub ku_cert_sign: bool,
    pub has_ku: bool,
    pub server_auth: bool,
    pub client_auth: bool,
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Vec<u8>>,
    pub not_before: i64,
    pub not_after: i64,
    pub spki: Vec<u8>,
    pub serial: Vec<u8>,
    pub key_bits: usize,
    pub key_is_rsa: bool,
}

pub(crate) fn view_pem(pem: &[u8]) -> View {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).unwrap();
    let x = p.parse_x509().unwrap();
    let name_cn = |n: &x509_parser::x509::X509Name| {
        n.iter_common_name()
            .next()
            .map(|a| a.as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let pk = x.public_key().parsed().unwrap();
    let (key_is_rsa, key_bits) = match &pk {
        x509_parser::public_key::PublicKey::RSA(r) => (true, r.key_size()),
        x509_parser::public_key::PublicKey::EC(e) => (false, e.key_size()),
        _ => (false, 0),
    };
    let mut v = View {
        cn: name_cn(x.subject()),
        orgs: x
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        issuer_cn: name_cn(x.issuer()),
        dns: vec![],
        ips: vec![],
        other_sans: vec![],
        is_ca: false,
        has_basic_constraints: false,
        ku_digital_signature: false,
        ku_key_encipherment: false,
        ku_cert_sign: false,
        has_ku: false,
        server_auth: false,
        client_auth: false,
        ski: None,
        aki: None,
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
        spki: x.public_key().raw.to_vec(),
        serial: x.raw_serial().to_vec(),
        key_bits,
        key_is_rsa,
    };
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => {
                v.has_basic_constraints = true;
                v.is_ca = bc.ca;
            }
            ParsedExtension::KeyUsage(ku) => {
                v.has_ku = true;
                v.ku_digital_signature = ku.digital_signature();
                v.ku_key_encipherment = ku.key_encipherment();
                v.ku_cert_sign = ku.key_cert_sign();
            }
            ParsedExtension::ExtendedKeyUsage(e) => {
                v.server_auth = e.server_auth;
                v.client_auth = e.client_auth;
            }
            ParsedExtension::SubjectAlternativeName(s) => {
                for n in &s.general_names {
                    match n {
                        GeneralName::DNSName(d) => v.dns.push(d.to_string()),
                        GeneralName::IPAddress(b) => v.ips.push(match b.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                            _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                        }),
                        _ => v.other_sans.push(format!("{n:?}")),
                    }
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => v.ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                v.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    v
}

pub(crate) fn view(path: &Path) -> View {
    view_pem(&std::fs::read(path).unwrap())
}

/// `text` (a command's output) mentions every one of `needles`.
pub(crate) fn assert_mentions(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "{n:?} not mentioned in:\n{text}");
    }
}

/// `v` carries every IP address of `ips` and every DNS name of `dns` as SANs.
pub(crate) fn assert_sans(v: &View, ips: &[&str], dns: &[&str]) {
    for i in ips {
        let ip: IpAddr = i.parse().unwrap();
        assert!(v.ips.contains(&ip), "{}: missing IP {i}: {:?}", v.cn, v.ips);
    }
    for d in dns {
        assert!(
            v.dns.iter().any(|n| n == d),
            "{}: missing DNS {d}: {:?}",
            v.cn,
            v.dns
        );
    }
}

/// `v` is a TLS server certificate (serverAuth, no clientAuth) whose SANs are exactly `dns` and
/// `ips`, in this order.
pub(crate) fn assert_serving_only(v: &View, dns: &[&str], ips: &[&str]) {
    assert_eq!(v.dns, dns, "{}", v.cn);
    let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
    assert_eq!(v.ips, ips, "{}", v.cn);
    assert!(v.server_auth && !v.client_auth, "{}: usages", v.cn);
}

/// admin.conf (in `c`'s kubeconfig dir) points at `server`, and `<pki>/apiserver.crt` verifies
/// against `<pki>/ca.crt` as a TLS server.
pub(crate) fn assert_api_endpoint(c: &Cluster, pki: &Path, server: &str) {
    assert_eq!(kubeconfig(&c.conf("admin.conf")).server, server);
    openssl_verify(
        &pki.join("ca.crt"),
        &pki.join("apiserver.crt"),
        Some("sslserver"),
    );
}

/// Minimal kubeconfig reader for tests (independent of the library).
pub(crate) struct Kc {
    pub server: String,
    pub cluster: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub(crate) fn kubeconfig(path: &Path) -> Kc {
    use base64::Engine;
    let v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = |s: &serde_yaml_ng::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let cluster = &v["clusters"][0];
    let user = &v["users"][0]["user"];
    Kc {
        server: cluster["cluster"]["server"].as_str().unwrap().to_owned(),
        cluster: cluster["name"].as_str().unwrap().to_owned(),
        ca_pem: d(&cluster["cluster"]["certificate-authority-data"]),
        cert_pem: d(&user["client-certificate-data"]),
        key_pem: d(&user["client-key-data"]),
    }
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) const DAY: i64 = 86_400;

/// etcd's TLS flags as kubeadm's etcd manifest sets them (client and peer TLS, both requiring
/// client certificates), for the certificates under the cert dir `pki`.
pub(crate) fn etcd_tls_args(pki: &Path) -> Vec<String> {
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    [
        ("--cert-file", p("etcd/server.crt")),
        ("--key-file", p("etcd/server.key")),
        ("--trusted-ca-file", p("etcd/ca.crt")),
        ("--peer-cert-file", p("etcd/peer.crt")),
        ("--peer-key-file", p("etcd/peer.key")),
        ("--peer-trusted-ca-file", p("etcd/ca.crt")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .chain([
        "--client-cert-auth".into(),
        "--peer-client-cert-auth".into(),
    ])
    .collect()
}

/// A TCP port of 127.0.0.1 free at the time of the call.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `path` opened for appending (created if missing), for a child process's output.
pub(crate) fn append_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Stops `child` as the kubelet stops a container: SIGTERM, then SIGKILL after 10 s.
pub(crate) fn terminate(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
