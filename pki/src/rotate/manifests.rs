//! Minimal, line-based edits of kubeadm static pod manifests: only the value of a
//! `- --flag=value` line changes; every other byte stays as it was.

/// kube-controller-manager's signing certificate flag (must name a single certificate).
pub const SIGNING_CERT_FLAG: &str = "--cluster-signing-cert-file";
/// kube-controller-manager's signing key flag.
pub const SIGNING_KEY_FLAG: &str = "--cluster-signing-key-file";

/// Where a flag's value sits in a manifest: byte range of the value.
fn locate(text: &str, flag: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        if let Some(rest) = trimmed.strip_prefix("- ") {
            let rest_trim = rest.trim_start();
            let quoted = rest_trim.starts_with('"');
            let arg = rest_trim.trim_start_matches('"');
            if let Some(value) = arg.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
                let value = value.trim_end();
                let value = if quoted {
                    value.strip_suffix('"').unwrap_or(value)
                } else {
                    value
                };
                let start = offset
                    + (body.len() - trimmed.len())
                    + 2
                    + (rest.len() - rest_trim.len())
                    + usize::from(quoted)
                    + flag.len()
                    + 1;
                return Some((start, start + value.len()));
            }
        }
        offset += line.len();
    }
    None
}

/// The value of `flag` in a manifest's argument list (`- --flag=value` lines), if present.
pub fn flag_value(text: &str, flag: &str) -> Option<String> {
    locate(text, flag).map(|(a, b)| text[a..b].to_owned())
}

/// `text` with the value of `flag` replaced by `value`; `None` when the flag is absent.
pub fn set_flag(text: &str, flag: &str, value: &str) -> Option<String> {
    let (a, b) = locate(text, flag)?;
    let mut out = String::with_capacity(text.len() + value.len());
    out.push_str(&text[..a]);
    out.push_str(value);
    out.push_str(&text[b..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KCM: &str = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - kube-controller-manager\n    - --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt\n    - \"--cluster-signing-key-file=/etc/kubernetes/pki/ca.key\"\n    - --root-ca-file=/etc/kubernetes/pki/ca.crt\n";

    #[test]
    fn edits_only_the_value() {
        assert_eq!(
            flag_value(KCM, SIGNING_CERT_FLAG).as_deref(),
            Some("/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(
            flag_value(KCM, SIGNING_KEY_FLAG).as_deref(),
            Some("/etc/kubernetes/pki/ca.key")
        );
        let edited = set_flag(KCM, SIGNING_CERT_FLAG, "/x/ca-signer.crt").unwrap_or_default();
        let edited = set_flag(&edited, SIGNING_KEY_FLAG, "/x/ca-signer.key").unwrap_or_default();
        assert!(edited.contains("    - --cluster-signing-cert-file=/x/ca-signer.crt\n"));
        assert!(edited.contains("    - \"--cluster-signing-key-file=/x/ca-signer.key\"\n"));
        assert!(edited.contains("--root-ca-file=/etc/kubernetes/pki/ca.crt"));
        let back = set_flag(&edited, SIGNING_CERT_FLAG, "/etc/kubernetes/pki/ca.crt")
            .and_then(|t| set_flag(&t, SIGNING_KEY_FLAG, "/etc/kubernetes/pki/ca.key"));
        assert_eq!(back.as_deref(), Some(KCM));
        assert_eq!(set_flag(KCM, "--absent", "x"), None);
    }
}
