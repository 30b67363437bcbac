//! Loading configuration files: the example parses, mistakes name file and line.

use kms_config::{
    BackendConfig, BackendKind, ConfigError, PluginConfig, SecretSource, SocketAddress,
};
use std::io::Write;

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

#[test]
fn full_example_parses() {
    let file = write(
        "socket: /var/run/kms-plugin/kms.sock
backend:
  kind: pkcs11                 # local | pkcs11 | aws
  local:  { state_dir: /var/lib/kms-plugin }
  pkcs11: { module: /usr/lib/softhsm/libsofthsm2.so, token_label: kms, pin_file: /etc/kms-plugin/pin, key_label: kms-root }
  aws:    { key_id: alias/k8s-secrets, region: us-east-1, endpoint: 'http://127.0.0.1:5000' }
",
    );
    let config = PluginConfig::load(file.path()).expect("valid config");
    let backend = config.backend.as_ref().expect("backend");
    assert_eq!(backend.kind(), BackendKind::Pkcs11);
    assert_eq!(
        config.socket,
        Some(SocketAddress::Path("/var/run/kms-plugin/kms.sock".into()))
    );
    assert_eq!(config.socket_mode.0, 0o600);
    let BackendConfig::Pkcs11(pkcs11) = backend else {
        panic!("not pkcs11: {backend:?}")
    };
    assert_eq!(pkcs11.pin, SecretSource::File("/etc/kms-plugin/pin".into()));
}

fn parse_error(text: &str) -> (usize, String) {
    let file = write(text);
    match PluginConfig::load(file.path()) {
        Err(ConfigError::Parse {
            line, reason, path, ..
        }) => {
            assert_eq!(path, file.path());
            (line, reason)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

/// Asserts that `text` fails to parse at `line` with a reason that mentions `needle`.
fn assert_parse_error_at(text: &str, line: usize, needle: &str) {
    let (found, reason) = parse_error(text);
    assert_eq!(found, line, "{text:?}: {reason}");
    assert!(reason.contains(needle), "{text:?}: {reason}");
}

#[test]
fn unknown_key_names_line() {
    assert_parse_error_at(
        "socket: /tmp/k.sock\nsokcet_mode: '0600'\nbackend: { kind: local, local: { state_dir: /tmp } }\n",
        2,
        "sokcet_mode",
    );
}

#[test]
fn bad_values_name_line_and_reason() {
    assert_parse_error_at(
        "socket: /tmp/k.sock\nbackend:\n  kind: local\n  local: { state_dir: /tmp }\nhealth_probe_interval: 10 parsecs\n",
        5,
        "unit",
    );
    assert_parse_error_at(
        "socket: /tmp/k.sock\nsocket_mode: '0666'\nbackend: { kind: local, local: { state_dir: /tmp } }\n",
        2,
        "world-writable",
    );
    let (line, _) = parse_error("socket: /tmp/k.sock\nbackend:\n  kind: vault\n");
    assert_eq!(line, 3);
}

#[test]
fn cross_field_rules() {
    let file = write(
        "socket: /tmp/k.sock\nbackend:\n  kind: pkcs11\n  pkcs11: { module: /m.so, token_label: t, key_label: k }\n",
    );
    let error = PluginConfig::load(file.path()).expect_err("no PIN source");
    assert!(error.to_string().contains("pin_file"), "{error}");
    let file = write("socket: /tmp/k.sock\nbackend:\n  kind: aws\n");
    let error = PluginConfig::load(file.path()).expect_err("no aws section");
    assert!(error.to_string().contains("backend.aws"), "{error}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let error =
        PluginConfig::load(std::path::Path::new("/nonexistent/kms.yaml")).expect_err("missing");
    assert!(error.to_string().contains("/nonexistent/kms.yaml"));
}

#[test]
fn jwt_signer_section() {
    let file = write(
        "jwt_signer:
  socket: /var/run/kms-plugin/jwt.sock
  max_token_expiration: 24h
  key:
    kind: local
    local: { key_file: /etc/kubernetes/pki/sa.key }
  verify_only_keys: [/etc/kubernetes/pki/sa.pub, { path: /old.pub, exclude_from_oidc_discovery: true }]
",
    );
    let config = PluginConfig::load(file.path()).expect("signer only");
    assert!(config.socket.is_none() && config.backend.is_none());
    let signer = config.jwt_signer.expect("signer");
    assert_eq!(signer.max_token_expiration.get().as_secs(), 86_400);
    assert!(!signer.verify_only_keys[0].excluded_from_discovery());
    assert!(signer.verify_only_keys[1].excluded_from_discovery());
    let short = write(
        "jwt_signer:\n  socket: /j.sock\n  max_token_expiration: 5m\n  key: { kind: local, local: { key_file: /k } }\n",
    );
    let error = PluginConfig::load(short.path()).expect_err("too short");
    assert!(error.to_string().contains("at least 10m"), "{error}");
    let nothing = write("log_level: info\n");
    assert!(
        PluginConfig::load(nothing.path()).is_err(),
        "nothing to serve"
    );
}

#[test]
fn zero_intervals_are_refused() {
    let file = write(
        "socket: /tmp/k.sock\nbackend: { kind: local, local: { state_dir: /tmp/s, poll_interval: 0s } }\n",
    );
    let error = PluginConfig::load(file.path()).expect_err("zero poll");
    assert!(error.to_string().contains("poll_interval"), "{error}");
}

#[test]
fn selected_section_errors_name_line_and_field() {
    for (yaml, field, line) in [
        (
            "socket: /tmp/k.sock\nbackend:\n  kind: pkcs11\n  pkcs11: { module: /m.so, token_label: t, key_label: k, pin_env: P, max_sessions: 0 }\n",
            "backend.pkcs11.max_sessions",
            4,
        ),
        (
            "socket: /tmp/k.sock\nbackend:\n  kind: aws\n  aws:\n    key_id: k\n    attempt_timeout: 0s\n",
            "backend.aws.attempt_timeout",
            6,
        ),
        (
            "socket: /tmp/k.sock\nbackend:\n  kind: aws\n  aws:\n    key_id: k\n    previous_key_ids: [alias/old]\n",
            "backend.aws.previous_key_ids",
            6,
        ),
        (
            "jwt_signer:\n  socket: /j.sock\n  max_token_expiration: 1h\n  key:\n    kind: aws\n    aws: { key_id: k, max_attempts: 0 }\n",
            "jwt_signer.key.aws.max_attempts",
            6,
        ),
    ] {
        assert_parse_error_at(yaml, line, field);
    }
}

#[test]
fn unquoted_socket_mode_is_refused_with_advice_to_quote() {
    for mode in ["0o640", "600", "416"] {
        assert_parse_error_at(
            &format!(
                "socket: /tmp/k.sock\nsocket_mode: {mode}\nbackend: {{ kind: local, local: {{ state_dir: /tmp }} }}\n"
            ),
            2,
            "quote it",
        );
    }
}

fn invalid(text: &str) -> (String, String) {
    let file = write(text);
    match PluginConfig::load(file.path()) {
        Err(ConfigError::Invalid { field, reason, .. }) => (field, reason),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

const SIGNER: &str =
    "  max_token_expiration: 1h\n  key: { kind: local, local: { key_file: /k.pem } }\n";

#[test]
fn abstract_sockets_need_the_opt_in_and_allowed_peers() {
    // Refused by default: nothing authenticates the server of an abstract socket.
    for yaml in [
        "socket: '@kms'\nallowed_peers: { uids: [0] }\nbackend: { kind: local, local: { state_dir: /tmp } }\n".to_owned(),
        format!("jwt_signer:\n  socket: '@sa'\n  allowed_peers: {{ uids: [0] }}\n{SIGNER}"),
    ] {
        let (field, reason) = invalid(&yaml);
        assert!(field.ends_with("socket"), "{field}");
        assert!(
            reason.contains("nothing authenticates the server")
                && reason.contains(&format!("{}allow_abstract_socket: true", field.trim_end_matches("socket"))),
            "{reason}"
        );
    }
    let (field, reason) = invalid(
        "socket: '@kms'\nallow_abstract_socket: true\nbackend: { kind: local, local: { state_dir: /tmp } }\n",
    );
    assert_eq!(field, "socket");
    assert!(reason.contains("allowed_peers"), "{reason}");
    let (field, reason) = invalid(&format!(
        "jwt_signer:\n  socket: '@sa'\n  allow_abstract_socket: true\n{SIGNER}"
    ));
    assert_eq!(field, "jwt_signer.socket");
    assert!(reason.contains("jwt_signer.allowed_peers"), "{reason}");
    let (field, _) = invalid(
        "socket: '@kms'\nallow_abstract_socket: true\nallowed_peers: { uids: [] }\nbackend: { kind: local, local: { state_dir: /tmp } }\n",
    );
    assert_eq!(field, "allowed_peers");

    let file = write(&format!(
        "socket: '@kms'\nallow_abstract_socket: true\nallowed_peers: {{ uids: [0], gids: [5] }}\nbackend: {{ kind: local, local: {{ state_dir: /tmp }} }}\njwt_signer:\n  socket: '@sa'\n  allow_abstract_socket: true\n  allowed_peers: {{ gids: [7] }}\n{SIGNER}"
    ));
    let config = PluginConfig::load(file.path()).expect("valid");
    let peers = config.allowed_peers.expect("kms peers");
    assert!(peers.allows(0, 1) && peers.allows(9, 5) && !peers.allows(9, 9));
    let signer = config.jwt_signer.expect("signer");
    assert!(signer.allowed_peers.expect("signer peers").allows(3, 7));
}

#[test]
fn aws_previous_key_ids_and_the_revocation_switch() {
    let arn = "arn:aws:kms:eu-west-1:111122223333:key/0a1b";
    let file = write(&format!(
        "socket: /tmp/k.sock\nrevoked_key_stops_encrypt: false\nbackend:\n  kind: aws\n  aws:\n    key_id: alias/k\n    previous_key_ids: [{arn}]\n"
    ));
    let config = PluginConfig::load(file.path()).expect("parses");
    assert!(!config.revoked_key_stops_encrypt);
    let Some(BackendConfig::Aws(aws)) = config.backend else {
        panic!("not aws")
    };
    assert_eq!(aws.previous_key_ids, vec![arn.to_owned()]);
    let file = write("socket: /tmp/k.sock\nbackend:\n  kind: aws\n  aws: { key_id: k }\n");
    let config = PluginConfig::load(file.path()).expect("parses");
    assert!(
        config.revoked_key_stops_encrypt,
        "revocation stops Encrypt by default"
    );
    let Some(BackendConfig::Aws(aws)) = config.backend else {
        panic!("not aws")
    };
    assert!(aws.previous_key_ids.is_empty());
}

#[test]
fn the_header_list_cap_is_bounded_and_defaults_to_h2s() {
    let file = write("socket: /tmp/k.sock\nbackend: { kind: local, local: { state_dir: /tmp } }\n");
    let config = PluginConfig::load(file.path()).expect("default");
    assert_eq!(config.max_header_list_size.bytes(), 16_384);
    let file = write(
        "socket: /tmp/k.sock\nmax_header_list_size: 65536\nbackend: { kind: local, local: { state_dir: /tmp } }\n",
    );
    let config = PluginConfig::load(file.path()).expect("64 KiB");
    assert_eq!(config.max_header_list_size.bytes(), 65_536);
    for (value, needle) in [
        ("2048", "4096 to 1048576"),
        ("2000000", "4096 to 1048576"),
        ("'16k'", "max_header_list_size"),
    ] {
        assert_parse_error_at(
            &format!(
                "socket: /tmp/k.sock\nmax_header_list_size: {value}\nbackend: {{ kind: local, local: {{ state_dir: /tmp }} }}\n"
            ),
            2,
            needle,
        );
    }
}

#[test]
fn health_policy_defaults_choices_and_mistakes() {
    use kms_config::BackendOutage;
    let base = "socket: /tmp/k.sock\nbackend: { kind: local, local: { state_dir: /tmp } }\n";
    let config = PluginConfig::load(write(base).path()).expect("defaults");
    assert_eq!(config.health.backend_outage, BackendOutage::Serve);
    assert_eq!(config.health.outage_grace.get().as_secs(), 24 * 3600);
    let report = format!("{base}health:\n  backend_outage: report\n  outage_grace: 90s\n");
    let config = PluginConfig::load(write(&report).path()).expect("report");
    assert_eq!(config.health.backend_outage, BackendOutage::Report);
    assert_eq!(config.health.outage_grace.get().as_secs(), 90);
    assert_parse_error_at(
        &format!("{base}health:\n  backend_outage: ignore\n"),
        4,
        "ignore",
    );
    assert_parse_error_at(
        &format!("{base}health:\n  outage_gracee: 1h\n"),
        4,
        "outage_gracee",
    );
    let zero = format!("{base}health: {{ outage_grace: 0s }}\n");
    let error = PluginConfig::load(write(&zero).path()).expect_err("no zero grace");
    assert!(error.to_string().contains("health.outage_grace"), "{error}");
}
