//! The restart sequence an operator must follow after each phase, in order, before running the
//! next phase.

use serde::Serialize;

use super::plan::{Phase, Target};

/// One step of a restart sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartStep {
    /// What to do: `run` (a command), `restart`, `wait`, `update` or `copy` (to users' machines).
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
const EACH_CP: &str = "every control-plane node that has not run it yet (each on its own files: never copy a leaf, a leaf key or a kubeconfig between nodes)";
const WORKERS: &str = "every worker node";
const ETCD: &str = "every etcd member, one at a time, waiting for a healthy cluster in between";

/// The phase run on every control-plane node; `gate` says what must hold before the next phase
/// starts anywhere.
const fn run_everywhere(command: &'static str, gate: &'static str) -> RestartStep {
    step("run", command, EACH_CP, gate)
}

const START_GATE: &str = "the first node ran `start --export FILE`; the others take the same new CA (key) from FILE; `start` and the restarts below must be complete on every node before `switch` runs on any";
const SWITCH_GATE: &str = "each node re-issues its own leaves and kubeconfigs from their own subjects and SANs; `switch` and the restarts below must be complete on every node before `finish` runs on any";
const FINISH_GATE: &str = "each node drops the old CA (key) from its own files";
const UPLOAD_CERTS: RestartStep = step(
    "run",
    "`kubeadm init phase upload-certs --upload-certs` (on one control-plane node, once finish is complete on every node)",
    "cluster",
    "kubeadm's kubeadm-certs Secret still holds the old CA keys; nodes joined later must get the new ones",
);

/// The sequence to follow after `phase` of `target` (and after `abort`, pass `None`).
pub fn sequence(target: Target, phase: Option<Phase>) -> Vec<RestartStep> {
    use Phase::{Finish, Start, Switch};
    match (target, phase) {
        (Target::Ca, Some(Start)) => vec![
            run_everywhere(
                "`pki rotate ca start --join FILE --certificate-key HEX`",
                START_GATE,
            ),
            step(
                "run",
                "`pki rotate ca start --worker --join FILE.public --ca-cert-hash sha256:HEX` (ca.crt and kubelet.conf CA data only; never give a worker FILE or the certificate key)",
                WORKERS,
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
            step(
                "restart",
                "every pod using in-cluster config (kube-proxy, CoreDNS, the CNI, operators)",
                "cluster",
                "client-go reads the CA file once: restart them once kube-root-ca.crt holds both CAs and before any API server presents a new-CA certificate (before `switch` on any node)",
            ),
        ],
        (Target::Ca, Some(Switch)) => vec![
            run_everywhere("`pki rotate ca switch --confirm-nodes`", SWITCH_GATE),
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
                "new kubelet.conf client certificate (worker nodes: `pki kubelet` or CSR rotation)",
            ),
            step(
                "copy",
                "admin.conf, super-admin.conf",
                "the machines of their users",
                "old admin credentials stop working at finish",
            ),
        ],
        (Target::Ca, Some(Finish)) => vec![
            run_everywhere("`pki rotate ca finish`", FINISH_GATE),
            step(
                "run",
                "`pki rotate ca finish --worker` (ca.crt and kubelet.conf CA data only)",
                WORKERS,
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
            UPLOAD_CERTS,
        ],
        (Target::FrontProxyCa, Some(p @ (Start | Switch | Finish))) => {
            let mut v = vec![
                run_everywhere(
                    match p {
                        Start => {
                            "`pki rotate front-proxy-ca start --join FILE --certificate-key HEX`"
                        }
                        Switch => "`pki rotate front-proxy-ca switch --confirm-nodes`",
                        Finish => "`pki rotate front-proxy-ca finish`",
                    },
                    match p {
                        Start => START_GATE,
                        Switch => SWITCH_GATE,
                        Finish => FINISH_GATE,
                    },
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
            ];
            if p == Finish {
                v.push(UPLOAD_CERTS);
            }
            v
        }
        (Target::EtcdCa, Some(Start)) => vec![
            run_everywhere(
                "`pki rotate etcd-ca start --join FILE --certificate-key HEX`",
                START_GATE,
            ),
            step(
                "restart",
                "etcd",
                ETCD,
                "--trusted-ca-file and --peer-trusted-ca-file",
            ),
            step("restart", "kube-apiserver", CP, "--etcd-cafile"),
        ],
        (Target::EtcdCa, Some(Switch)) => vec![
            run_everywhere("`pki rotate etcd-ca switch --confirm-nodes`", SWITCH_GATE),
            step(
                "restart",
                "etcd",
                ETCD,
                "new server and peer certificates (each member's own name and IP)",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "new --etcd-certfile/--etcd-keyfile client certificate",
            ),
        ],
        (Target::EtcdCa, Some(Finish)) => vec![
            run_everywhere("`pki rotate etcd-ca finish`", FINISH_GATE),
            step("restart", "etcd", ETCD, "trusted CA files"),
            step("restart", "kube-apiserver", CP, "--etcd-cafile"),
            UPLOAD_CERTS,
        ],
        (Target::Sa, Some(Start)) => vec![
            run_everywhere(
                "`pki rotate sa start --join FILE --certificate-key HEX`",
                "every API server must verify tokens of both keys before any signs with the new one: `start` and the restart below complete on every node before `switch` runs on any",
            ),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--service-account-key-file",
            ),
        ],
        (Target::Sa, Some(Switch)) => vec![
            run_everywhere(
                "`pki rotate sa switch --confirm-nodes`",
                "every API server signs with the new key; `switch` complete on every node before `finish` runs on any",
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
            run_everywhere("`pki rotate sa finish`", "the old key no longer verifies"),
            step(
                "restart",
                "kube-apiserver",
                CP,
                "--service-account-key-file",
            ),
            UPLOAD_CERTS,
        ],
        (Target::Ca, None) => vec![
            run_everywhere(
                "`pki rotate ca abort`",
                "every node must hold its own pre-rotation files again",
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
            run_everywhere("`pki rotate front-proxy-ca abort`", "restored files"),
            step("restart", "kube-apiserver", CP, "restored files"),
        ],
        (Target::EtcdCa, None) => vec![
            run_everywhere("`pki rotate etcd-ca abort`", "restored files"),
            step(
                "restart",
                "etcd",
                "every etcd member, one at a time",
                "restored files",
            ),
            step("restart", "kube-apiserver", CP, "restored files"),
        ],
        (Target::Sa, None) => vec![
            run_everywhere("`pki rotate sa abort`", "restored files"),
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
