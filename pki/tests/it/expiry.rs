//! `pki check-expiration`: tables, JSON, YAML, Prometheus and --fail-within.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

#[test]
fn table_lists_everything_and_marks_missing() {
    let c = Cluster::initialized();
    std::fs::remove_file(c.path("front-proxy-client.crt")).unwrap();
    std::fs::remove_file(c.conf("super-admin.conf")).unwrap();
    let out = ok(&c.cmd(&["check-expiration"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("CERTIFICATE")
            && lines[0].contains("EXPIRES")
            && lines[0].contains("RESIDUAL TIME")
            && lines[0].contains("CERTIFICATE AUTHORITY")
            && lines[0].ends_with("EXTERNALLY MANAGED"),
        "{}",
        lines[0]
    );
    for n in EXPIRATION_NAMES {
        assert!(
            lines.iter().any(|l| l.split_whitespace().any(|w| w == *n)),
            "{n} listed:\n{out}"
        );
    }
    assert!(out.contains("!MISSING! front-proxy-client"), "{out}");
    assert!(out.contains("!MISSING! super-admin.conf"), "{out}");
    let api = lines.iter().find(|l| l.starts_with("apiserver ")).unwrap();
    assert!(
        api.contains("364d") && api.contains(" ca ") && api.trim_end().ends_with("no"),
        "{api}"
    );
    let ca_head = lines
        .iter()
        .position(|l| l.starts_with("CERTIFICATE AUTHORITY"))
        .unwrap();
    assert!(lines[ca_head].contains("EXPIRES") && lines[ca_head].ends_with("EXTERNALLY MANAGED"));
    let ca_rows: Vec<&&str> = lines[ca_head + 1..].iter().collect();
    assert_eq!(ca_rows.len(), 3);
    assert!(
        ca_rows
            .iter()
            .any(|l| l.starts_with("etcd-ca ") && l.contains("9y")),
        "{out}"
    );
}

#[test]
fn json_yaml_and_prometheus() {
    let c = Cluster::initialized();
    std::fs::remove_file(c.path("etcd/peer.crt")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&c.cmd(&["check-expiration", "-o", "json"]))).unwrap();
    let certs = json["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), EXPIRATION_NAMES.len());
    let api = certs.iter().find(|e| e["name"] == "apiserver").unwrap();
    assert_eq!(api["certificateAuthority"], "ca");
    assert_eq!(api["missing"], false);
    assert_eq!(api["externallyManaged"], false);
    let residual = api["residualSeconds"].as_i64().unwrap();
    assert!((residual - 365 * DAY).abs() < 600, "{residual}");
    let date = time::OffsetDateTime::parse(
        api["expirationDate"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (date.unix_timestamp() - (now() + 365 * DAY)).abs() < 600,
        "{date}"
    );
    let peer = certs.iter().find(|e| e["name"] == "etcd-peer").unwrap();
    assert_eq!(peer["missing"], true);
    assert_eq!(json["certificateAuthorities"].as_array().unwrap().len(), 3);

    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&ok(&c.cmd(&["check-expiration", "-o", "yaml"]))).unwrap();
    assert_eq!(
        yaml["certificates"].as_sequence().unwrap().len(),
        EXPIRATION_NAMES.len()
    );
    assert_eq!(yaml["certificateAuthorities"][0]["name"], "ca");

    let prom = ok(&c.cmd(&["check-expiration", "-o", "prometheus"]));
    assert!(prom.contains("# TYPE pki_certificate_expiry_timestamp_seconds gauge"));
    assert!(prom.contains("# HELP pki_certificate_expiry_timestamp_seconds "));
    let api_line = prom
        .lines()
        .find(|l| l.starts_with("pki_certificate_expiry_timestamp_seconds{name=\"apiserver\","))
        .unwrap();
    let path = c.path("apiserver.crt");
    assert!(
        api_line.contains(&format!("path=\"{}\"", path.display()))
            && api_line.contains("ca=\"ca\""),
        "{api_line}"
    );
    let value: i64 = api_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((value - (now() + 365 * DAY)).abs() < 600);
    assert!(
        prom.lines().any(
            |l| l.starts_with("pki_certificate_missing{name=\"etcd-peer\"") && l.ends_with(" 1")
        ),
        "{prom}"
    );
    assert!(!prom.contains("pki_certificate_expiry_timestamp_seconds{name=\"etcd-peer\""));
    // Every sample line is `name{labels} number`.
    for l in prom.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{l}");
    }
    // --output-file writes the textfile atomically.
    let f = c.root().join("pki.prom");
    ok(&c.cmd(&[
        "check-expiration",
        "-o",
        "prometheus",
        "--output-file",
        f.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap().lines().count(),
        prom.lines().count()
    );
}

#[test]
fn fail_within_sets_the_exit_code() {
    let c = Cluster::initialized_with(&["--certificate-validity-period", "240h"]);
    let out = c.cmd(&["check-expiration", "--fail-within", "720h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("apiserver"));
    ok(&c.cmd(&["check-expiration", "--fail-within", "24h"]));
    ok(&c.cmd(&["check-expiration", "--fail-within", "9d"]));
    assert_eq!(
        c.cmd(&["check-expiration", "--fail-within", "11d"])
            .status
            .code(),
        Some(2)
    );
    std::fs::remove_file(c.conf("admin.conf")).unwrap();
    ok(&c.cmd(&["check-expiration", "--fail-within", "1h"]));
    let out = c.cmd(&[
        "check-expiration",
        "--fail-within",
        "1h",
        "--fail-on-missing",
    ]);
    assert_eq!(out.status.code(), Some(3), "missing fails only when asked");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.conf"));
    // An expired certificate always fails, and shows as <invalid> like kubeadm.
    let c2 = Cluster::initialized_with(&["--certificate-validity-period", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let out = c2.cmd(&["check-expiration", "--fail-within", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(ok(&c2.cmd(&["check-expiration"])).contains("<invalid>"));
    let err = fails(&c.cmd(&["check-expiration", "--fail-within", "soon"]));
    assert!(err.contains("invalid duration"), "{err}");
}
