//! The restart sequence an operator must follow after each phase, in order, before running the
//! next phase.

use serde::Serialize;

use super::plan::{Phase, Target};

/// One step of a restart sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartStep {
    /// What to do: `copy`, `restart`, `wait` or `update`.
    pub action: &'static str,
    /// The component (or files) concerned.
    pub component: &'static str,
    /// Where.
    pub nodes: &'static str,
    /// Why.
    pub reason: &'static str,
}

const fn step(
    action: &'static str,
    component: &'static str,
    nodes: &'static str,
    reason: &'static str,
) -> RestartStep {
    RestartStep {
        action,
        component,
        nodes,
        reason,
    }
}

const CP: &str = "every control-plane node, one node at a time";
const ALL: &str = "every node";

/// The sequence to follow after `phase` of `target` (and after `abort`, pass `None`).
pub fn sequence(target: Target, phase: Option<Phase>) -> Vec<RestartStep> {
    use Phase::{Finish, Start, Switch};
    match (target, phase) {
        (Target::Ca, Some(Start)) => vec![
            step(
                "copy",
                "ca.crt (old+new bundle), ca-signer.crt, ca-signer.key",
                CP,
                "other control-plane nodes must trust both CAs too",
            ),
            step(
                "copy",
                "ca.crt (old+new bundle) as the kubelet clientCAFile, kubelet.conf CA data",
                ALL,
                "kubelets must accept clients and API servers of both CAs",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--client-ca-file (ca.crt) now holds both CAs",
            ),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "reads --root-ca-file once; --cluster-signing-*-file must point at ca-signer.crt/ca-signer.key",
            ),
            step(
                "restart",
                "kube-scheduler",
                CP,
                "scheduler.conf CA data now holds both CAs",
            ),
            step(
                "restart",
                "kubelet",
                ALL,
                "loads clientCAFile and kubelet.conf CA data at start",
            ),
            step(
                "wait",
                "ConfigMap kube-root-ca.crt in every namespace",
                "cluster",
                "must hold both CAs before any API server presents a new-CA certificate",
            ),
        ],
        (Target::Ca, Some(Switch)) => vec![
            step(
                "copy",
                "ca.crt, ca.key, ca-signer.*, apiserver.*, apiserver-kubelet-client.*, kubeconfigs",
                CP,
                "every control-plane node serves and signs with the new CA",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "new serving and kubelet-client certificates",
            ),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "new signer (ca-signer.*) and controller-manager.conf",
            ),
            step(
                "restart",
                "kube-scheduler",
                CP,
                "new scheduler.conf client certificate",
            ),
            step(
                "restart",
                "kubelet",
                ALL,
                "new kubelet.conf client certificate (other nodes: `pki kubelet` or CSR rotation)",
            ),
            step(
                "copy",
                "admin.conf, super-admin.conf",
                "the machines of their users",
                "old admin credentials stop working at finish",
            ),
        ],
        (Target::Ca, Some(Finish)) => vec![
            step(
                "copy",
                "ca.crt (new CA only), ca.key, kubeconfigs",
                CP,
                "the old CA is no longer trusted",
            ),
            step(
                "copy",
                "ca.crt (new CA only) as the kubelet clientCAFile, kubelet.conf CA data",
                ALL,
                "kubelets stop trusting the old CA",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--client-ca-file holds the new CA only",
            ),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "--cluster-signing-*-file back to ca.crt/ca.key; --root-ca-file reloaded",
            ),
            step("restart", "kube-scheduler", CP, "scheduler.conf CA data"),
            step(
                "restart",
                "kubelet",
                ALL,
                "clientCAFile and kubelet.conf CA data",
            ),
            step(
                "update",
                "ConfigMap kube-public/cluster-info (`kubeadm init phase bootstrap-token`)",
                "cluster",
                "kubeadm join discovers the CA there; joins need the new --discovery-token-ca-cert-hash",
            ),
        ],
        (Target::FrontProxyCa, Some(Start | Switch | Finish)) => vec![
            step(
                "copy",
                "front-proxy-ca.crt, front-proxy-client.*",
                CP,
                "every API server must agree",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--requestheader-client-ca-file and --proxy-client-cert-file; extension API servers reload the published CA by themselves",
            ),
            step(
                "restart",
                "kube-controller-manager, kube-scheduler",
                CP,
                "optional: their --requestheader-client-ca-file only authenticates requests proxied to their own ports",
            ),
        ],
        (Target::EtcdCa, Some(Start)) => vec![
            step(
                "copy",
                "etcd/ca.crt (old+new bundle)",
                CP,
                "every etcd member and API server must trust both CAs",
            ),
            step(
                "restart",
                "etcd",
                "every etcd member, one at a time, waiting for a healthy cluster in between",
                "--trusted-ca-file and --peer-trusted-ca-file",
            ),
            step("restart", "kube-apiserver", CP, "--etcd-cafile"),
        ],
        (Target::EtcdCa, Some(Switch)) => vec![
            step(
                "copy",
                "etcd/ca.*, etcd/server.*, etcd/peer.*, etcd/healthcheck-client.*, apiserver-etcd-client.*",
                CP,
                "certificates from the new etcd CA",
            ),
            step(
                "restart",
                "etcd",
                "every etcd member, one at a time, waiting for a healthy cluster in between",
                "new server and peer certificates",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "new --etcd-certfile/--etcd-keyfile client certificate",
            ),
        ],
        (Target::EtcdCa, Some(Finish)) => vec![
            step(
                "copy",
                "etcd/ca.crt (new CA only)",
                CP,
                "the old etcd CA is no longer trusted",
            ),
            step(
                "restart",
                "etcd",
                "every etcd member, one at a time, waiting for a healthy cluster in between",
                "trusted CA files",
            ),
            step("restart", "kube-apiserver", CP, "--etcd-cafile"),
        ],
        (Target::Sa, Some(Start)) => vec![
            step(
                "copy",
                "sa.pub (old+new public keys)",
                CP,
                "every API server must verify tokens of both keys before any signs with the new one",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--service-account-key-file",
            ),
        ],
        (Target::Sa, Some(Switch)) => vec![
            step(
                "copy",
                "sa.key (new), sa.pub (new+old)",
                CP,
                "every API server signs with the new key",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--service-account-signing-key-file",
            ),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "--service-account-private-key-file",
            ),
            step(
                "wait",
                "the maximum token lifetime",
                "cluster",
                "tokens signed by the old key stay valid until they expire; kubelets refresh projected tokens at least every 24h",
            ),
        ],
        (Target::Sa, Some(Finish)) => vec![
            step(
                "copy",
                "sa.pub (new key only)",
                CP,
                "the old key no longer verifies",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--service-account-key-file",
            ),
        ],
        (Target::Ca, None) => vec![
            step(
                "copy",
                "ca.crt, ca.key, leaves and kubeconfigs as restored",
                ALL,
                "every node must hold the pre-rotation files again",
            ),
            step("restart", "kube-apiserver", CP, "restored files"),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "restored signer flags and files",
            ),
            step("restart", "kube-scheduler", CP, "restored scheduler.conf"),
            step(
                "restart",
                "kubelet",
                ALL,
                "restored CA files and kubelet.conf",
            ),
        ],
        (Target::FrontProxyCa, None) => vec![
            step(
                "copy",
                "front-proxy-ca.crt, front-proxy-client.*",
                CP,
                "restored files",
            ),
            step("restart", "kube-apiserver", CP, "restored files"),
        ],
        (Target::EtcdCa, None) => vec![
            step(
                "copy",
                "etcd/*, apiserver-etcd-client.*",
                CP,
                "restored files",
            ),
            step(
                "restart",
                "etcd",
                "every etcd member, one at a time",
                "restored files",
            ),
            step("restart", "kube-apiserver", CP, "restored files"),
        ],
        (Target::Sa, None) => vec![
            step("copy", "sa.key, sa.pub", CP, "restored files"),
            step("restart", "kube-apiserver", CP, "restored key files"),
            step(
                "restart",
                "kube-controller-manager",
                CP,
                "restored key file",
            ),
        ],
    }
}

/// Renders a sequence as numbered lines.
pub fn render(steps: &[RestartStep]) -> String {
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!(
            "  {}. {} {} on {}: {}\n",
            i + 1,
            s.action,
            s.component,
            s.nodes,
            s.reason
        ));
    }
    out
}
