//! What every node's state admits, decided on one read of the rotation record (and of the
//! Nodes and kubelet CSRs): each gate has a name (`--force` names the one it overrides) and the
//! nodes that stand in its way. The node running the command is left out of its own gates: its
//! own state file already admitted the command.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::client::{APISERVER_ENDPOINT_ANNOTATION, KubeletClientCsr, NodeInfo};
use super::handout::{Handout, ROOT_CA_CONFIGMAP, SERVING_SIGNER};
use super::record::{NodeEntry, Record, Role};
use crate::inspect::{Cert, parse_bundle};
use crate::rotate::state::format_rfc3339;
use crate::rotate::{Move, Target};

/// A gate and what stands in its way (nothing: it is open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Its name, e.g. `every-node-trusts-the-new-ca`.
    pub name: &'static str,
    /// One line per node (or fact) in the way.
    pub blockers: Vec<String>,
}

impl Gate {
    /// Nothing stands in its way.
    pub fn open(&self) -> bool {
        self.blockers.is_empty()
    }
}

/// Everything a gate reads.
#[derive(Debug)]
pub struct View<'a> {
    /// The rotation's record (as read for this decision).
    pub record: &'a Record,
    /// Every registered Node.
    pub nodes: &'a [NodeInfo],
    /// Other rotations of the same target that some node has not ended.
    pub other_active: &'a [Record],
    /// Newest issued kubelet client certificate per node (read for `ca finish` only).
    pub kubelet_csrs: &'a BTreeMap<String, KubeletClientCsr>,
    /// The chain each node's kubelet serves, by Node name (read for `ca finish` on a
    /// control-plane node only; `None`: not read, and the gate is left out).
    pub kubelet_serving: Option<&'a BTreeMap<String, Served>>,
    /// Where each control-plane node's kube-apiserver serves and what it presented, by Node
    /// name (read for `ca finish` only; `None`: not read, and the gate is left out).
    pub apiserver_serving: Option<&'a BTreeMap<String, ServedAt>>,
    /// The node running the command (`None`: the view of `status`).
    pub me: Option<&'a str>,
    /// Whether the command runs on a worker.
    pub worker: bool,
    /// Pin of the new CA (key) this node holds, when known.
    pub new_ca: Option<&'a str>,
    /// The new CA certificate(s), PEM (`ca`).
    pub new_ca_pem: Option<&'a str>,
    /// The old CA certificate(s), PEM (`ca`).
    pub old_ca_pem: Option<&'a str>,
    /// What the cluster hands out of the CA (read for `ca switch` only).
    pub handout: Option<&'a Handout>,
    /// Now.
    pub now: OffsetDateTime,
}

/// What a server presented: its chain, leaf first, or why it could not be read.
pub type Served = std::result::Result<Vec<Cert>, String>;

/// Where a server was read (`host:port`), and what it presented.
pub type ServedAt = (String, Served);

/// A node the gates expect to hear from: registered as a Node, or present in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected<'a> {
    name: &'a str,
    role: Role,
    registered: bool,
}

impl View<'_> {
    /// Every node that takes part in a rotation of this target, but the one running the
    /// command: control-plane nodes always, workers for `ca` only.
    fn expected(&self) -> Vec<Expected<'_>> {
        let mut out: BTreeMap<&str, Expected<'_>> = BTreeMap::new();
        for n in self.nodes {
            let role = if n.control_plane {
                Role::ControlPlane
            } else {
                Role::Worker
            };
            out.insert(
                &n.name,
                Expected {
                    name: &n.name,
                    role,
                    registered: true,
                },
            );
        }
        for (name, e) in &self.record.entries {
            out.entry(name).or_insert(Expected {
                name,
                role: e.role,
                registered: false,
            });
        }
        out.into_values()
            .filter(|e| Some(e.name) != self.me)
            .filter(|e| e.role == Role::ControlPlane || self.record.target == Target::Ca)
            .collect()
    }

    fn entry(&self, name: &str) -> Option<&NodeEntry> {
        self.record.entries.get(name)
    }

    /// `None` when `e` holds the same new CA as this node (or either is unknown), else the
    /// difference as a blocker's words.
    fn other_new_ca(&self, e: &NodeEntry) -> Option<String> {
        match (self.new_ca, e.new_ca.as_deref()) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                Some(format!("holds another new CA ({theirs}, this node {mine})"))
            }
            _ => None,
        }
    }
}

/// The gates `step` must pass on this node.
pub fn gates_for(step: Move, v: &View<'_>) -> Vec<Gate> {
    match (step, v.worker) {
        (Move::Start, _) => vec![one_rotation_at_a_time(v)],
        (Move::Switch, _) => {
            let mut g = vec![every_node_trusts_new(v)];
            if v.record.target == Target::Ca
                && let Some(h) = v.handout
            {
                let new_cas = new_ca_certs(v);
                g.push(root_ca_copies_hold_new(h, &new_cas));
                g.push(serving_bundles_hold_new(h, &new_cas));
                g.push(readers_restarted(h, &new_cas));
            }
            g
        }
        (Move::Finish, true) => {
            let mut g = vec![every_control_plane_switched(v)];
            g.extend(v.apiserver_serving.map(|s| apiservers_serve_new_ca(v, s)));
            g
        }
        (Move::Finish, false) => {
            let mut g = vec![every_control_plane_switched(v)];
            match v.record.target {
                Target::Ca => {
                    g.push(every_node_trusts_new(v));
                    g.push(kubelet_clients_from_new_ca(v));
                    if let Some(served) = v.kubelet_serving {
                        g.push(kubelet_serving_from_new_ca(v, served));
                    }
                    g.extend(v.apiserver_serving.map(|s| apiservers_serve_new_ca(v, s)));
                }
                Target::Sa => g.push(old_tokens_expired(v)),
                Target::FrontProxyCa | Target::EtcdCa => {}
            }
            g
        }
        (Move::Abort, _) => vec![no_node_switched(v)],
    }
}

/// `start`: no other rotation of the target is still under way on some node.
fn one_rotation_at_a_time(v: &View<'_>) -> Gate {
    let blockers = v
        .other_active
        .iter()
        .map(|r| {
            let nodes: Vec<String> = r
                .entries
                .iter()
                .filter(|(_, e)| !e.ended())
                .map(|(n, e)| format!("{n} at {}", e.progress()))
                .collect();
            format!(
                "rotation {} ({}) is still under way: {}; finish or abort it there first",
                r.rotation_id,
                r.object(),
                nodes.join(", ")
            )
        })
        .collect();
    Gate {
        name: "one-rotation-at-a-time",
        blockers,
    }
}

/// `switch` (and `ca finish`): every other node trusts the new CA (key).
fn every_node_trusts_new(v: &View<'_>) -> Gate {
    let t = v.record.target;
    let blockers = v
        .expected()
        .into_iter()
        .filter_map(|n| {
            let how = match v.entry(n.name) {
                None if n.role == Role::Worker => format!(
                    "has not run `pki rotate {t} start --worker --join FILE.public --ca-cert-hash … --kubeconfig …`"
                ),
                None => format!("has not run `pki rotate {t} start --join … --kubeconfig …`"),
                Some(e) if !e.trusts_new() => format!("is at {}", e.progress()),
                Some(e) => v.other_new_ca(e)?,
            };
            Some(format!("{} ({}) {how}", n.name, n.role))
        })
        .collect();
    Gate {
        name: "every-node-trusts-the-new-ca",
        blockers,
    }
}

/// `finish`: every other control-plane node has completed `switch`.
fn every_control_plane_switched(v: &View<'_>) -> Gate {
    let t = v.record.target;
    let blockers = v
        .expected()
        .into_iter()
        .filter(|n| n.role == Role::ControlPlane)
        .filter_map(|n| {
            let how = match v.entry(n.name) {
                None => "has not started this rotation".to_owned(),
                Some(e) if !e.switched() => {
                    format!("is at {}: run `pki rotate {t} switch` there", e.progress())
                }
                Some(e) => v.other_new_ca(e)?,
            };
            Some(format!("{} (control-plane) {how}", n.name))
        })
        .collect();
    Gate {
        name: "every-control-plane-node-switched",
        blockers,
    }
}

/// The new CA certificate(s) this node holds (empty when unknown: every check against it fails).
fn new_ca_certs(v: &View<'_>) -> Vec<Cert> {
    v.new_ca_pem
        .and_then(|pem| parse_bundle(pem, std::path::Path::new("new CA")).ok())
        .unwrap_or_default()
}

/// The old CA certificate(s) this node holds (empty when unknown).
fn old_ca_certs(v: &View<'_>) -> Vec<Cert> {
    v.old_ca_pem
        .and_then(|pem| parse_bundle(pem, std::path::Path::new("old CA")).ok())
        .unwrap_or_default()
}

fn holds(certs: &[Cert], new_cas: &[Cert]) -> bool {
    !new_cas.is_empty()
        && new_cas
            .iter()
            .all(|n| certs.iter().any(|c| c.der() == n.der()))
}

/// `ca switch`: every namespace's `kube-root-ca.crt` holds the new CA (kube-controller-manager
/// restarted with the bundle as `--root-ca-file` republishes it).
fn root_ca_copies_hold_new(h: &Handout, new_cas: &[Cert]) -> Gate {
    let mut blockers: Vec<String> = h
        .root_ca
        .iter()
        .filter(|c| !holds(&c.certs, new_cas))
        .map(|c| {
            format!(
                "{}/{ROOT_CA_CONFIGMAP} does not hold the new CA yet: restart kube-controller-manager on every control-plane node (its --root-ca-file is the bundle since start)",
                c.namespace
            )
        })
        .collect();
    if h.root_ca.is_empty() {
        blockers.push(format!(
            "{ROOT_CA_CONFIGMAP} is published in no namespace: is kube-controller-manager running?"
        ));
    }
    Gate {
        name: "kube-root-ca-crt-holds-the-new-ca",
        blockers,
    }
}

/// `ca switch`: the ClusterTrustBundles of the serving signer hold the new CA (where the API
/// serves them).
fn serving_bundles_hold_new(h: &Handout, new_cas: &[Cert]) -> Gate {
    let blockers = h
        .serving_bundles
        .iter()
        .flatten()
        .filter(|(_, certs)| !holds(certs, new_cas))
        .map(|(name, _)| {
            format!(
                "ClusterTrustBundle {name} ({SERVING_SIGNER}) does not hold the new CA yet: restart kube-controller-manager, which publishes it from --root-ca-file"
            )
        })
        .collect();
    Gate {
        name: "serving-trust-bundle-holds-the-new-ca",
        blockers,
    }
}

/// `ca switch`: every running pod that mounts `kube-root-ca.crt` started after its namespace's
/// copy held the new CA (client-go reads the CA file once).
fn readers_restarted(h: &Handout, new_cas: &[Cert]) -> Gate {
    let copies: BTreeMap<&str, _> = h
        .root_ca
        .iter()
        .map(|c| (c.namespace.as_str(), c))
        .collect();
    let blockers = h
        .readers
        .iter()
        .filter_map(|p| {
            let ns = p.pod.split('/').next().unwrap_or_default();
            let copy = copies.get(ns).filter(|c| holds(&c.certs, new_cas));
            let fresh = match (copy.and_then(|c| c.updated), p.started) {
                (Some(updated), Some(started)) => started > updated,
                _ => false,
            };
            (!fresh).then(|| {
                format!(
                    "pod {} started before its {ROOT_CA_CONFIGMAP} held the new CA: restart it",
                    p.pod
                )
            })
        })
        .collect();
    Gate {
        name: "pods-reading-kube-root-ca-crt-restarted",
        blockers,
    }
}

/// `ca finish`: every registered node's kubelet client certificate is from the new CA, shown by
/// its newest issued CSR or by the node's own entry (its `kubelet.conf`).
fn kubelet_clients_from_new_ca(v: &View<'_>) -> Gate {
    let new_cas = new_ca_certs(v);
    let by_new = |c: &Cert| new_cas.iter().any(|ca| c.is_signed_by(ca));
    let mut blockers = Vec::new();
    for n in v.nodes {
        let csr = v.kubelet_csrs.get(&n.name);
        if csr.is_some_and(|c| by_new(&c.cert)) {
            continue;
        }
        let entry = v.entry(&n.name);
        if entry.is_some_and(|e| {
            e.kubelet_client_ca.is_some() && e.kubelet_client_ca.as_deref() == v.new_ca
        }) {
            continue;
        }
        let seen = match (csr, entry.and_then(|e| e.kubelet_client_ca.as_deref())) {
            (Some(c), _) => format!("its newest kubelet client CSR ({}) was not signed by the new CA", c.csr),
            (None, Some(_)) => "its kubelet.conf's client certificate is from the old CA".to_owned(),
            (None, None) => "nothing shows its kubelet client certificate is from the new CA (no issued CSR, no entry)".to_owned(),
        };
        blockers.push(format!(
            "{}: {seen}; renew it (kubelet client rotation, or `pki kubelet`), then on the node rerun its `start` with --kubeconfig to publish it",
            n.name
        ));
    }
    Gate {
        name: "kubelet-client-certificates-from-the-new-ca",
        blockers,
    }
}

/// `ca finish`: no kubelet serves a certificate the old CA signed (a kubelet with
/// `serverTLSBootstrap` gets one from the cluster CA through a `kubelet-serving` CSR, and clients
/// that verify kubelets against the cluster CA stop trusting it at finish). A kubelet's own
/// self-signed certificate depends on no cluster CA. A kubelet that cannot be read blocks:
/// nothing then shows what it serves.
fn kubelet_serving_from_new_ca(v: &View<'_>, served: &BTreeMap<String, Served>) -> Gate {
    let (new_cas, old_cas) = (new_ca_certs(v), old_ca_certs(v));
    let blockers = v
        .nodes
        .iter()
        .filter_map(|n| {
            let words = match (&n.kubelet_endpoint, served.get(&n.name)) {
                (None, _) => "reports no kubelet endpoint (status.addresses and status.daemonEndpoints), so what its kubelet serves cannot be read".to_owned(),
                (Some(at), None) => format!("its kubelet at {at} was not read"),
                (Some(at), Some(Err(e))) => format!("its kubelet at {at} could not be read ({e})"),
                (Some(at), Some(Ok(chain))) => {
                    format!("its kubelet at {at} {}", serving_verdict(chain, &new_cas, &old_cas)?)
                }
            };
            Some(format!("{}: {words}", n.name))
        })
        .collect();
    Gate {
        name: "kubelet-serving-certificates-from-the-new-ca",
        blockers,
    }
}

/// `ca finish`, also on a worker: every control-plane Node's kube-apiserver serves a certificate
/// of the new CA (re-issued at that node's `switch`, and loaded by a restart or, from 1.34, by
/// itself): a client left trusting the new CA alone could not reach one that serves the old. The
/// endpoints are kubeadm's annotation on the kube-apiserver mirror pods; a control-plane node
/// without one blocks, since nothing then shows what its API server serves.
fn apiservers_serve_new_ca(v: &View<'_>, served: &BTreeMap<String, ServedAt>) -> Gate {
    let new_cas = new_ca_certs(v);
    let blockers = v
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .filter_map(|n| {
            let words = match served.get(&n.name) {
                None => format!(
                    "has no kube-apiserver mirror pod with the annotation {APISERVER_ENDPOINT_ANNOTATION} (kube-system, label component=kube-apiserver), so what its API server serves cannot be read"
                ),
                Some((at, Err(e))) => format!("its kube-apiserver at {at} could not be read ({e})"),
                Some((at, Ok(chain))) => match chain.first() {
                    Some(leaf) if new_cas.iter().any(|ca| leaf.is_signed_by(ca)) => return None,
                    Some(leaf) => format!(
                        "its kube-apiserver at {at} serves a certificate that is not from the new CA (CN {:?}, until {}): restart kube-apiserver there once its switch is complete",
                        leaf.info().common_name,
                        format_rfc3339(leaf.info().not_after)
                    ),
                    None => format!("its kube-apiserver at {at} presented no certificate"),
                },
            };
            Some(format!("{}: {words}", n.name))
        })
        .collect();
    Gate {
        name: "kube-apiservers-serve-the-new-ca",
        blockers,
    }
}

/// What stands in the way in a served chain: `None` when its leaf is from the new CA, or from
/// neither the new nor the old CA (the kubelet's own certificate).
fn serving_verdict(chain: &[Cert], new_cas: &[Cert], old_cas: &[Cert]) -> Option<String> {
    let Some(leaf) = chain.first() else {
        return Some("presented no certificate".into());
    };
    if new_cas.iter().any(|ca| leaf.is_signed_by(ca)) {
        return None;
    }
    if new_cas.is_empty() || old_cas.is_empty() {
        return Some(
            "serves a certificate that is not from the new CA, and this node cannot tell whether the old CA signed it".into(),
        );
    }
    let info = leaf.info();
    old_cas.iter().any(|ca| leaf.is_signed_by(ca)).then(|| {
        format!(
            "serves a certificate of the old CA (CN {:?}, until {}): renew it from the new CA (with serverTLSBootstrap: approve the kubelet's new kubelet-serving CSR), then run finish again",
            info.common_name,
            format_rfc3339(info.not_after)
        )
    })
}

/// `sa finish`: no token the old key signed can still be valid, on any node's clock of `switch`.
fn old_tokens_expired(v: &View<'_>) -> Gate {
    let mut blockers = Vec::new();
    for (name, e) in &v.record.entries {
        if e.role != Role::ControlPlane {
            continue;
        }
        match e.tokens_valid_until {
            Some(until) if until <= v.now => {}
            Some(until) => blockers.push(format!(
                "{name} switched later: tokens signed by the old key may be valid until {}",
                format_rfc3339(until)
            )),
            None if Some(name.as_str()) == v.me => {}
            None => blockers.push(format!(
                "{name} records no switch time: when its tokens expire is unknown"
            )),
        }
    }
    Gate {
        name: "old-service-account-tokens-expired",
        blockers,
    }
}

/// `abort`: no other node has begun `switch` (what its new CA signed would stop being trusted).
fn no_node_switched(v: &View<'_>) -> Gate {
    let t = v.record.target;
    let blockers = v
        .record
        .entries
        .iter()
        .filter(|(name, e)| Some(name.as_str()) != v.me && e.switch_begun())
        .map(|(name, e)| {
            format!(
                "{name} is at {}: complete the rotation instead (`pki rotate {t} finish` once switch is complete everywhere)",
                e.progress()
            )
        })
        .collect();
    Gate {
        name: "no-node-has-switched",
        blockers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(role: Role, step: Move, complete: bool, new_ca: &str) -> NodeEntry {
        NodeEntry {
            role,
            step,
            complete,
            old_ca: Some("sha256:old".into()),
            new_ca: Some(new_ca.into()),
            kubelet_client_ca: None,
            tokens_valid_until: None,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn node(name: &str, control_plane: bool) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            control_plane,
            kubelet_endpoint: None,
        }
    }

    /// Blockers of the gates `step` meets on `me`, gate by gate.
    fn blockers(
        target: Target,
        record: &[(&str, NodeEntry)],
        step: Move,
        me: &str,
    ) -> Vec<(&'static str, Vec<String>)> {
        let mut r = Record::new(target, "ab12");
        r.entries = record
            .iter()
            .map(|(n, e)| ((*n).to_owned(), e.clone()))
            .collect();
        let nodes = [node("cp1", true), node("cp2", true), node("w1", false)];
        let csrs = BTreeMap::new();
        let v = View {
            record: &r,
            nodes: &nodes,
            other_active: &[],
            kubelet_csrs: &csrs,
            kubelet_serving: None,
            apiserver_serving: None,
            me: Some(me),
            worker: me.starts_with('w'),
            new_ca: Some("sha256:new"),
            new_ca_pem: None,
            old_ca_pem: None,
            handout: None,
            now: OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1),
        };
        gates_for(step, &v)
            .into_iter()
            .map(|g| (g.name, g.blockers))
            .collect()
    }

    #[test]
    fn switch_waits_for_every_node_of_the_target_on_the_same_new_ca() {
        use Move::{Start, Switch};
        let started = |role| entry(role, Start, true, "sha256:new");
        // A ca rotation: the worker is expected; an unstarted node and one on another CA block.
        let b = blockers(
            Target::Ca,
            &[("cp1", started(Role::ControlPlane))],
            Switch,
            "cp1",
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1.len(), 2, "{b:?}");
        assert!(
            b[0].1[0].starts_with("cp2 (control-plane) has not run"),
            "{b:?}"
        );
        assert!(b[0].1[1].starts_with("w1 (worker) has not run"), "{b:?}");
        let other = entry(Role::ControlPlane, Start, true, "sha256:other");
        let b = blockers(
            Target::Ca,
            &[
                ("cp2", other),
                ("w1", entry(Role::Worker, Start, false, "sha256:new")),
            ],
            Switch,
            "cp1",
        );
        assert!(
            b[0].1[0].contains("holds another new CA (sha256:other"),
            "{b:?}"
        );
        assert!(
            b[0].1[1].contains("w1 (worker) is at start (in progress)"),
            "{b:?}"
        );
        // An etcd-ca rotation expects no worker.
        let b = blockers(
            Target::EtcdCa,
            &[("cp2", started(Role::ControlPlane))],
            Switch,
            "cp1",
        );
        assert!(b[0].1.is_empty(), "{b:?}");
    }

    #[test]
    fn abort_is_closed_once_another_node_began_switch() {
        let b = blockers(
            Target::EtcdCa,
            &[(
                "cp2",
                entry(Role::ControlPlane, Move::Switch, false, "sha256:new"),
            )],
            Move::Abort,
            "cp1",
        );
        assert_eq!(b[0].0, "no-node-has-switched");
        assert!(
            b[0].1[0].starts_with("cp2 is at switch (in progress)"),
            "{b:?}"
        );
        // The node's own entry never blocks it.
        let b = blockers(
            Target::EtcdCa,
            &[(
                "cp1",
                entry(Role::ControlPlane, Move::Switch, false, "sha256:new"),
            )],
            Move::Abort,
            "cp1",
        );
        assert!(b[0].1.is_empty(), "{b:?}");
    }

    #[test]
    fn sa_finish_waits_for_the_latest_token_window() {
        let mut late = entry(Role::ControlPlane, Move::Switch, true, "sha256:new");
        late.tokens_valid_until = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::hours(2));
        let mut early = late.clone();
        early.tokens_valid_until = Some(OffsetDateTime::UNIX_EPOCH);
        let b = blockers(
            Target::Sa,
            &[("cp1", early.clone()), ("cp2", late)],
            Move::Finish,
            "cp1",
        );
        let tokens = b
            .iter()
            .find(|(g, _)| *g == "old-service-account-tokens-expired");
        assert!(
            tokens.is_some_and(|(_, l)| l.len() == 1 && l[0].starts_with("cp2 switched later")),
            "{b:?}"
        );
        let b = blockers(
            Target::Sa,
            &[("cp1", early.clone()), ("cp2", early)],
            Move::Finish,
            "cp1",
        );
        assert!(b.iter().all(|(_, l)| l.is_empty()), "{b:?}");
    }

    #[test]
    fn a_worker_finishes_after_every_control_plane_node_switched() {
        let switched = entry(Role::ControlPlane, Move::Switch, true, "sha256:new");
        let started = entry(Role::ControlPlane, Move::Start, true, "sha256:new");
        let b = blockers(
            Target::Ca,
            &[("cp1", switched.clone()), ("cp2", started)],
            Move::Finish,
            "w1",
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "every-control-plane-node-switched");
        assert!(
            b[0].1[0].starts_with("cp2 (control-plane) is at start (complete)"),
            "{b:?}"
        );
        let b = blockers(
            Target::Ca,
            &[("cp1", switched.clone()), ("cp2", switched)],
            Move::Finish,
            "w1",
        );
        assert!(b[0].1.is_empty(), "{b:?}");
    }

    use crate::key::PrivateKey;

    /// A CA made for a test, and its key.
    struct TestCa {
        cert: Cert,
        key: PrivateKey,
    }

    impl TestCa {
        fn new(common_name: &str) -> TestCa {
            use crate::issue::{CertSpec, self_signed_ca};
            use crate::key::KeyAlgorithm;
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key");
            let spec = CertSpec::ca(common_name, &[], std::time::Duration::from_secs(86_400));
            let cert = self_signed_ca(&spec, &key).expect("CA");
            TestCa { cert, key }
        }

        /// A serving certificate signed by `ca`.
        fn serving(ca: &Cert, ca_key: &PrivateKey) -> Cert {
            use crate::issue::{CertSpec, issue};
            use crate::key::KeyAlgorithm;
            use crate::profile::{Sans, Usage};
            let spec = CertSpec::leaf(
                "system:node:w",
                &["system:nodes"],
                Sans::default(),
                Usage::Server,
                std::time::Duration::from_secs(86_400),
            );
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("key");
            issue(&spec, &key.public_key_der(), ca, ca_key).expect("serving certificate")
        }
    }

    #[test]
    fn ca_finish_waits_for_kubelets_that_serve_an_old_ca_certificate() {
        let (old, new, own) = (
            TestCa::new("kubernetes"),
            TestCa::new("kubernetes"),
            TestCa::new("w3-ca@1"),
        );
        let served: BTreeMap<String, Served> = [
            ("w1", Ok(vec![TestCa::serving(&new.cert, &new.key)])),
            ("w2", Ok(vec![TestCa::serving(&old.cert, &old.key)])),
            (
                "w3",
                Ok(vec![TestCa::serving(&own.cert, &own.key), own.cert.clone()]),
            ),
            ("w4", Err("connect: refused".to_owned())),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
        let mut nodes: Vec<NodeInfo> = ["w1", "w2", "w3", "w4"]
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                kubelet_endpoint: Some(format!("10.0.0.{i}:10250")),
                ..node(n, false)
            })
            .collect();
        nodes.push(node("w5", false));
        let r = Record::new(Target::Ca, "ab12");
        let csrs = BTreeMap::new();
        let (new_pem, old_pem) = (new.cert.pem(), old.cert.pem());
        let view = |old_ca_pem| View {
            record: &r,
            nodes: &nodes,
            other_active: &[],
            kubelet_csrs: &csrs,
            kubelet_serving: Some(&served),
            apiserver_serving: None,
            me: Some("cp1"),
            worker: false,
            new_ca: None,
            new_ca_pem: Some(&new_pem),
            old_ca_pem,
            handout: None,
            now: OffsetDateTime::now_utc(),
        };
        let v = view(Some(&old_pem));
        let g = gates_for(Move::Finish, &v)
            .into_iter()
            .find(|g| g.name == "kubelet-serving-certificates-from-the-new-ca")
            .expect("the gate is met at ca finish");
        // w1 (new CA) and w3 (its own self-signed CA) pass; the old CA, an unreadable kubelet
        // and one with no endpoint block.
        assert_eq!(g.blockers.len(), 3, "{:?}", g.blockers);
        assert!(
            g.blockers[0].starts_with(
                "w2: its kubelet at 10.0.0.1:10250 serves a certificate of the old CA"
            ),
            "{}",
            g.blockers[0]
        );
        assert!(
            g.blockers[1].starts_with(
                "w4: its kubelet at 10.0.0.3:10250 could not be read (connect: refused)"
            ),
            "{}",
            g.blockers[1]
        );
        assert!(
            g.blockers[2].starts_with("w5: reports no kubelet endpoint"),
            "{}",
            g.blockers[2]
        );
        // Without the old CA, a certificate not from the new CA cannot be told apart: it blocks.
        let g = kubelet_serving_from_new_ca(&view(None), &served);
        assert_eq!(g.blockers.len(), 4, "{:?}", g.blockers);
        assert!(
            g.blockers[1].contains("cannot tell whether the old CA signed it"),
            "{}",
            g.blockers[1]
        );
        // Not read at all (status): the gate is left out.
        let v = View {
            kubelet_serving: None,
            ..view(Some(&old_pem))
        };
        assert!(
            gates_for(Move::Finish, &v)
                .iter()
                .all(|g| g.name != "kubelet-serving-certificates-from-the-new-ca")
        );
    }

    #[test]
    fn ca_finish_waits_for_every_kube_apiserver_to_serve_the_new_ca() {
        let (old, new) = (TestCa::new("kubernetes"), TestCa::new("kubernetes"));
        let served: BTreeMap<String, ServedAt> = [
            ("cp1", Ok(vec![TestCa::serving(&new.cert, &new.key)])),
            ("cp2", Ok(vec![TestCa::serving(&old.cert, &old.key)])),
            ("cp4", Err("connect: refused".to_owned())),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_owned(), (format!("10.0.0.1:6443{}", &n[2..]), s)))
        .collect();
        let nodes = [
            node("cp1", true),
            node("cp2", true),
            node("cp3", true),
            node("cp4", true),
            node("w1", false),
        ];
        let r = Record::new(Target::Ca, "ab12");
        let csrs = BTreeMap::new();
        let new_pem = new.cert.pem();
        for worker in [false, true] {
            let v = View {
                record: &r,
                nodes: &nodes,
                other_active: &[],
                kubelet_csrs: &csrs,
                kubelet_serving: None,
                apiserver_serving: Some(&served),
                me: Some(if worker { "w1" } else { "cp1" }),
                worker,
                new_ca: None,
                new_ca_pem: Some(&new_pem),
                old_ca_pem: None,
                handout: None,
                now: OffsetDateTime::now_utc(),
            };
            let g = gates_for(Move::Finish, &v)
                .into_iter()
                .find(|g| g.name == "kube-apiservers-serve-the-new-ca")
                .expect("met at finish, on a worker too");
            // cp1 serves the new CA's; the old CA's, no mirror pod and no answer block.
            assert_eq!(g.blockers.len(), 3, "{:?}", g.blockers);
            assert!(g.blockers[0].starts_with("cp2: its kube-apiserver at 10.0.0.1:64432 serves a certificate that is not from the new CA"), "{}", g.blockers[0]);
            assert!(
                g.blockers[1].starts_with("cp3: has no kube-apiserver mirror pod"),
                "{}",
                g.blockers[1]
            );
            assert!(
                g.blockers[2]
                    .starts_with("cp4: its kube-apiserver at 10.0.0.1:64434 could not be read"),
                "{}",
                g.blockers[2]
            );
        }
    }
}
