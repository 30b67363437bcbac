//! `check-expiration`: collect the expiry of every certificate, CA and kubeconfig client
//! certificate, and render it as kubeadm-style tables, JSON, YAML or Prometheus text.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::duration::short_human;
use crate::error::Result;
use crate::kubeconfig;
use crate::layout::{self, Layout};
use crate::node_state;
use crate::profile::{self, CaId};
use crate::store;

/// One row: a certificate that exists (with its expiry) or is missing. Serialized with the
/// fields of kubeadm's `output.kubeadm.k8s.io/v1alpha3` `Certificate` (`name`,
/// `expirationDate`, `residualTime`, `externallyManaged`, `caName`, `missing`) plus `path`,
/// `residualSeconds` and `certificateAuthority` (same value as `caName`, kept for older scripts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Entry {
    /// kubeadm's name (`apiserver`, `admin.conf`, `etcd-ca` ...).
    pub name: String,
    /// The file holding it.
    pub path: PathBuf,
    /// Expiry (notAfter), `None` (JSON `null`, as kubeadm's zero time) when missing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expiration_date: Option<OffsetDateTime>,
    /// Seconds left at collection time (negative when expired), kubeadm's `residualTime`.
    #[serde(rename = "residualTime")]
    pub residual_time: i64,
    /// Same as `residualTime` (this tool's original field name).
    pub residual_seconds: i64,
    /// The signing CA's name; empty (and omitted, as kubeadm does) for CAs and missing rows.
    #[serde(rename = "caName", skip_serializing_if = "String::is_empty")]
    pub ca_name: String,
    /// Same as `caName` (this tool's original field name).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate_authority: String,
    /// True when the signing CA (or, for a CA, this CA) has no private key here.
    pub externally_managed: bool,
    /// True when the file does not exist.
    pub missing: bool,
}

/// The two tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Report {
    /// Always `CertificateExpirationInfo`.
    pub kind: &'static str,
    /// Output schema version.
    pub api_version: &'static str,
    /// kubeadm's rows: leaves and the client certificates of the kubeconfigs kubeadm renews,
    /// sorted by name.
    pub certificates: Vec<Entry>,
    /// Not a kubeadm row: kubelet.conf's client certificate (embedded, or the
    /// `kubelet-client-current.pem` it references), which kubeadm leaves to the kubelet.
    /// Serialized as the extra list `kubeletCertificates`; shown in the table and Prometheus.
    #[serde(rename = "kubeletCertificates")]
    pub kubelet: Vec<Entry>,
    /// The CAs.
    pub certificate_authorities: Vec<Entry>,
}

/// Output formats of `check-expiration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// kubeadm's two tables.
    Table,
    /// JSON document.
    Json,
    /// YAML document.
    Yaml,
    /// Prometheus / node-exporter textfile format.
    Prometheus,
}

fn ca_is_external(layout: &Layout, id: CaId) -> bool {
    let p = profile::ca_profile(id);
    layout.crt(p.base).exists() && !layout.key(p.base).exists()
}

fn entry(
    name: &str,
    path: PathBuf,
    not_after: Option<OffsetDateTime>,
    ca: &str,
    external: bool,
    now: OffsetDateTime,
) -> Entry {
    let residual = not_after.map(|t| (t - now).whole_seconds()).unwrap_or(0);
    let ca = if not_after.is_some() { ca } else { "" };
    Entry {
        name: name.to_owned(),
        path,
        expiration_date: not_after,
        residual_time: residual,
        residual_seconds: residual,
        ca_name: ca.to_owned(),
        certificate_authority: ca.to_owned(),
        externally_managed: external,
        missing: not_after.is_none(),
    }
}

/// kubeadm's `apiVersion` of the check-expiration output.
pub const API_VERSION: &str = "output.kubeadm.k8s.io/v1alpha3";

/// Reads every file of the layout: kubeadm's rows, i.e. the leaves, the CAs and the kubeconfigs
/// `kubeadm certs renew` handles (not kubelet.conf, whose certificate the kubelet rotates).
/// `super-admin.conf` is left out where the node state ([`node_state`]) says it does not belong
/// (a joined control-plane node, or a version before 1.29). Unreadable or unparsable files are
/// errors naming the file.
pub fn collect(layout: &Layout) -> Result<Report> {
    let node = node_state::load(&layout.kubeconfig_dir)?.unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let mut certificates = Vec::new();
    let etcd = |ca: CaId| profile::etcd_applies(ca, node.etcd_external);
    for leaf in profile::LEAVES.iter().filter(|l| etcd(l.ca)) {
        let path = layout.crt(leaf.base);
        let cert = layout::load_cert(&path)?;
        let ca = profile::ca_profile(leaf.ca);
        certificates.push(entry(
            leaf.name,
            path,
            cert.map(|c| c.info().not_after),
            ca.name,
            ca_is_external(layout, leaf.ca),
            now,
        ));
    }
    let mut kubelet = Vec::new();
    for kc in profile::KUBECONFIGS.iter().filter(|kc| node.expects(kc)) {
        let path = layout.kubeconfig(kc);
        let not_after = match store::read_secret_optional(&path)? {
            Some(text) => kubeconfig::parse(&text, &path)?
                .client_cert
                .map(|c| c.info().not_after),
            None => None,
        };
        let row = entry(
            kc.file,
            path,
            not_after,
            "ca",
            ca_is_external(layout, CaId::Ca),
            now,
        );
        if kc.renewable {
            certificates.push(row);
        } else {
            kubelet.push(row);
        }
    }
    certificates.sort_by(|a, b| a.name.cmp(&b.name));
    let mut certificate_authorities = Vec::new();
    for ca in profile::CAS.iter().filter(|c| etcd(c.id)) {
        let path = layout.crt(ca.base);
        let cert = layout::load_cert(&path)?;
        certificate_authorities.push(entry(
            ca.name,
            path,
            cert.map(|c| c.info().not_after),
            "",
            ca_is_external(layout, ca.id),
            now,
        ));
    }
    Ok(Report {
        kind: "CertificateExpirationInfo",
        api_version: API_VERSION,
        certificates,
        kubelet,
        certificate_authorities,
    })
}

impl Report {
    /// Entries that exist and expire within `window` (or have expired).
    pub fn expiring_within(&self, window: Duration) -> Vec<&Entry> {
        let w = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        self.all()
            .filter(|e| !e.missing && e.residual_seconds < w)
            .collect()
    }

    /// Entries whose file is missing.
    pub fn missing(&self) -> Vec<&Entry> {
        self.all().filter(|e| e.missing).collect()
    }

    fn all(&self) -> impl Iterator<Item = &Entry> {
        self.certificates
            .iter()
            .chain(&self.kubelet)
            .chain(&self.certificate_authorities)
    }

    /// The certificate rows of the table and Prometheus: kubeadm's plus kubelet.conf, by name.
    fn certificate_rows(&self) -> Vec<&Entry> {
        let mut rows: Vec<&Entry> = self.certificates.iter().chain(&self.kubelet).collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Renders the report.
    pub fn render(&self, format: Format) -> Result<String> {
        match format {
            Format::Table => Ok(self.table()),
            Format::Json => serde_json::to_string_pretty(self)
                .map(|s| s + "\n")
                .map_err(|e| crate::Error::Render {
                    what: "JSON",
                    reason: e.to_string(),
                }),
            Format::Yaml => serde_yaml_ng::to_string(self).map_err(|e| crate::Error::Render {
                what: "YAML",
                reason: e.to_string(),
            }),
            Format::Prometheus => Ok(self.prometheus()),
        }
    }

    fn table(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let fmt_row = |e: &Entry, with_ca: bool| -> Vec<String> {
            if e.missing {
                let mut r = vec![
                    format!("!MISSING! {}", e.name),
                    String::new(),
                    String::new(),
                ];
                if with_ca {
                    r.push(String::new());
                }
                r.push(String::new());
                return r;
            }
            let mut r = vec![
                e.name.clone(),
                expires(e.expiration_date),
                short_human(e.residual_seconds),
            ];
            if with_ca {
                r.push(e.ca_name.clone());
            }
            r.push(yes_no(e.externally_managed));
            r
        };
        let mut out = String::new();
        let head1 = [
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
            "EXTERNALLY MANAGED",
        ];
        let rows1: Vec<Vec<String>> = self
            .certificate_rows()
            .into_iter()
            .map(|e| fmt_row(e, true))
            .collect();
        write_table(&mut out, &head1, &rows1);
        out.push('\n');
        let head2 = [
            "CERTIFICATE AUTHORITY",
            "EXPIRES",
            "RESIDUAL TIME",
            "EXTERNALLY MANAGED",
        ];
        let rows2: Vec<Vec<String>> = self
            .certificate_authorities
            .iter()
            .map(|e| fmt_row(e, false))
            .collect();
        write_table(&mut out, &head2, &rows2);
        out
    }

    fn prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP pki_certificate_expiry_timestamp_seconds Unix time (notAfter) at which the certificate expires.\n");
        out.push_str("# TYPE pki_certificate_expiry_timestamp_seconds gauge\n");
        let all = || {
            self.certificate_rows()
                .into_iter()
                .map(|e| (e, "certificate"))
                .chain(self.certificate_authorities.iter().map(|e| (e, "ca")))
        };
        for (e, kind) in all() {
            if let Some(t) = e.expiration_date {
                let _ = writeln!(
                    out,
                    "pki_certificate_expiry_timestamp_seconds{} {}",
                    labels(e, kind),
                    t.unix_timestamp()
                );
            }
        }
        out.push_str("# HELP pki_certificate_missing 1 when an expected certificate or kubeconfig file is missing.\n");
        out.push_str("# TYPE pki_certificate_missing gauge\n");
        for (e, kind) in all() {
            let _ = writeln!(
                out,
                "pki_certificate_missing{} {}",
                labels(e, kind),
                u8::from(e.missing)
            );
        }
        out
    }
}

fn labels(e: &Entry, kind: &str) -> String {
    format!(
        "{{name=\"{}\",path=\"{}\",ca=\"{}\",kind=\"{}\",externally_managed=\"{}\"}}",
        escape(&e.name),
        escape(&e.path.to_string_lossy()),
        escape(&e.ca_name),
        kind,
        e.externally_managed
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// kubeadm's EXPIRES format: `Jan 02, 2006 15:04 UTC`.
fn expires(t: Option<OffsetDateTime>) -> String {
    let Some(t) = t else { return String::new() };
    let f =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

fn write_table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{:<w$}   ", c, w = widths[i]);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(head.to_vec()));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
}
