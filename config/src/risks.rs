//! Settings that are valid but risky: the plugin starts with them and says so once, at WARN.

use crate::PluginConfig;
use std::time::Duration;

/// kube-apiserver's default deadline for a KMS v2 call (`timeout` of the EncryptionConfiguration's
/// `kms` provider).
pub const APISERVER_KMS_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest `local_kek.max_age` that passes without a warning.
pub const KEK_AGE_WARNING: Duration = Duration::from_secs(30 * 86_400);

impl PluginConfig {
    /// One sentence per risky setting: an abstract socket, `metrics_address` reachable from other hosts,
    /// `backend_timeout` that leaves kube-apiserver's own deadline no room, and a
    /// `local_kek.max_age` beyond 30 days.
    pub fn risks(&self) -> Vec<String> {
        let mut risks = Vec::new();
        if let Some(address) = &self.metrics_address
            && !address.0.ip().is_loopback()
        {
            risks.push(format!(
                "metrics_address {} is not a loopback address: /metrics, /healthz and /readyz are reachable from other hosts",
                address.0
            ));
        }
        let abstract_sockets = [
            self.socket.as_ref(),
            self.jwt_signer.as_ref().map(|s| &s.socket),
        ];
        for socket in abstract_sockets.into_iter().flatten() {
            if matches!(socket, crate::SocketAddress::Abstract(_)) {
                risks.push(format!(
                    "socket {socket} is abstract (allow_abstract_socket): nothing authenticates this server to its clients; a process that binds the name first would receive their requests"
                ));
            }
        }
        if self.backend.is_some() && self.backend_timeout.get() >= APISERVER_KMS_TIMEOUT {
            risks.push(format!(
                "backend_timeout {} is at or above kube-apiserver's default KMS timeout (3s): a slow root key call outlives the apiserver's deadline",
                self.backend_timeout
            ));
        }
        if self.backend.is_some() && self.local_kek.max_age.get() > KEK_AGE_WARNING {
            risks.push(format!(
                "local_kek.max_age is {} days, beyond 30: one local KEK seals data for that long",
                self.local_kek.max_age.get().as_secs() / 86_400
            ));
        }
        risks
    }
}

#[cfg(test)]
mod tests {
    use crate::{PluginConfig, SocketAddress};

    fn config(extra: &str) -> PluginConfig {
        let yaml = format!(
            "socket: /run/k.sock\nbackend: {{ kind: local, local: {{ state_dir: /var/lib/k }} }}\n{extra}"
        );
        PluginConfig::parse(&yaml, std::path::Path::new("test.yaml")).expect("valid")
    }

    #[test]
    fn safe_defaults_have_no_risk() {
        assert!(
            config("metrics_address: 127.0.0.1:9464\n")
                .risks()
                .is_empty()
        );
        let local = PluginConfig::local(SocketAddress::Path("k.sock".into()), "s".into());
        assert!(local.risks().is_empty());
    }

    #[test]
    fn each_risky_setting_is_named() {
        let risks = config(
            "metrics_address: 0.0.0.0:9464\nbackend_timeout: 3s\nlocal_kek: { max_uses: 1000, max_age: 31d }\n",
        )
        .risks();
        assert_eq!(risks.len(), 3, "{risks:?}");
        for needle in [
            "metrics_address 0.0.0.0:9464",
            "backend_timeout 3s",
            "local_kek.max_age",
        ] {
            assert!(
                risks.iter().any(|r| r.contains(needle)),
                "{needle}: {risks:?}"
            );
        }
    }

    #[test]
    fn an_abstract_socket_taken_with_the_opt_in_is_named() {
        let yaml = "socket: '@kms'\nallow_abstract_socket: true\nallowed_peers: { uids: [0] }\nbackend: { kind: local, local: { state_dir: /var/lib/k } }\n";
        let risks = PluginConfig::parse(yaml, std::path::Path::new("test.yaml"))
            .expect("valid")
            .risks();
        assert_eq!(risks.len(), 1, "{risks:?}");
        assert!(risks[0].contains("socket @kms is abstract"), "{risks:?}");
    }
}
