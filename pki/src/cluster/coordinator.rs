//! [`crate::rotate::Coordinator`] through the Kubernetes API: a step begins only when the gates
//! open on the record read in the same compare-and-swap that records the step as begun, so two
//! nodes deciding at once (one `switch`, one `abort`) cannot both go ahead.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::client::{Cluster, NodeInfo};
use super::gate::{Gate, Served, ServedAt, View, gates_for};
use super::record::{self, NodeEntry, Record, Role};
use super::serving::presented_chain;
use crate::error::{Error, Result};
use crate::rotate::{Coordinator, Move, NodeReport, Target};

/// The API coordinator of one node.
#[derive(Debug)]
pub struct ClusterCoordinator {
    cluster: Cluster,
    node: String,
    force: bool,
    record: bool,
}

impl ClusterCoordinator {
    /// The coordinator of node `node` (its Node name). `force` lets a closed gate be passed
    /// (each one named in the command's notes); with `record` false (`--dry-run`) the gates are
    /// checked and nothing is written.
    pub fn new(cluster: Cluster, node: String, force: bool, record: bool) -> ClusterCoordinator {
        ClusterCoordinator {
            cluster,
            node,
            force,
            record,
        }
    }

    /// Decides `step` on `record`: the closed gates refuse it, or are named when forced.
    fn decide(
        &self,
        step: Move,
        me: &NodeReport,
        record: &Record,
        reads: &Reads,
    ) -> Result<Vec<String>> {
        let view = View {
            record,
            nodes: &reads.nodes,
            other_active: &reads.other_active,
            kubelet_csrs: &reads.kubelet_csrs,
            kubelet_serving: reads.kubelet_serving.as_ref(),
            apiserver_serving: reads.apiserver_serving.as_ref(),
            me: Some(&self.node),
            worker: me.worker,
            new_ca: me.new_anchor.as_deref(),
            new_ca_pem: me.new_ca_pem.as_deref(),
            old_ca_pem: me.old_ca_pem.as_deref(),
            handout: reads.handout.as_ref(),
            now: OffsetDateTime::now_utc(),
        };
        let closed: Vec<Gate> = gates_for(step, &view)
            .into_iter()
            .filter(|g| !g.open())
            .collect();
        let Some(first) = closed.first() else {
            return Ok(Vec::new());
        };
        if !self.force {
            return Err(Error::ClusterRefused {
                object: record.object(),
                gate: first.name,
                reason: summary(&first.blockers),
            });
        }
        Ok(closed
            .iter()
            .map(|g| {
                format!(
                    "--force: the gate `{}` was closed and is overridden: {}",
                    g.name,
                    summary(&g.blockers)
                )
            })
            .collect())
    }

    /// Writes this node's entry for `step` (merged over what it held before).
    fn entry(
        &self,
        step: Move,
        complete: bool,
        me: &NodeReport,
        before: Option<&NodeEntry>,
    ) -> NodeEntry {
        let keep = |now: &Option<String>, f: fn(&NodeEntry) -> &Option<String>| {
            now.clone().or_else(|| before.and_then(|b| f(b).clone()))
        };
        NodeEntry {
            role: if me.worker {
                Role::Worker
            } else {
                Role::ControlPlane
            },
            step,
            complete,
            old_ca: keep(&me.old_anchor, |b| &b.old_ca),
            new_ca: keep(&me.new_anchor, |b| &b.new_ca),
            kubelet_client_ca: keep(&me.kubelet_client_ca, |b| &b.kubelet_client_ca),
            tokens_valid_until: me
                .tokens_valid_until
                .or_else(|| before.and_then(|b| b.tokens_valid_until)),
            updated_at: OffsetDateTime::now_utc(),
        }
    }
}

/// What the gates read besides the record: read once per command.
struct Reads {
    nodes: Vec<NodeInfo>,
    other_active: Vec<Record>,
    kubelet_csrs: BTreeMap<String, super::client::KubeletClientCsr>,
    kubelet_serving: Option<BTreeMap<String, Served>>,
    apiserver_serving: Option<BTreeMap<String, ServedAt>>,
    handout: Option<super::handout::Handout>,
}

impl Coordinator for ClusterCoordinator {
    fn begin(&mut self, target: Target, step: Move, me: &NodeReport) -> Result<Vec<String>> {
        let ca_finish = target == Target::Ca && step == Move::Finish && !me.worker;
        let nodes = self.cluster.nodes()?;
        let apiserver_serving = if target == Target::Ca && step == Move::Finish {
            Some(read_servers(self.cluster.apiserver_endpoints()?))
        } else {
            None
        };
        let reads = Reads {
            kubelet_serving: ca_finish.then(|| read_kubelets(&nodes)),
            apiserver_serving,
            nodes,
            other_active: if step == Move::Start {
                record::list(&self.cluster, target)?
                    .into_iter()
                    .filter(|r| r.rotation_id != me.rotation_id && r.active())
                    .collect()
            } else {
                Vec::new()
            },
            kubelet_csrs: if ca_finish {
                self.cluster.kubelet_client_csrs()?
            } else {
                BTreeMap::new()
            },
            handout: if target == Target::Ca && step == Move::Switch {
                Some(self.cluster.handout()?)
            } else {
                None
            },
        };
        if !self.record {
            let current = record::load(&self.cluster, target, &me.rotation_id)?
                .unwrap_or_else(|| Record::new(target, &me.rotation_id));
            return self.decide(step, me, &current, &reads);
        }
        let (_, notes) = record::update(&self.cluster, target, &me.rotation_id, |r| {
            let notes = self.decide(step, me, r, &reads)?;
            let entry = self.entry(step, false, me, r.entries.get(&self.node));
            r.entries.insert(self.node.clone(), entry);
            Ok(notes)
        })?;
        Ok(notes)
    }

    fn complete(&mut self, target: Target, step: Move, me: &NodeReport) -> Result<Vec<String>> {
        if !self.record {
            return Ok(Vec::new());
        }
        let unpublished = |e: Error| {
            Error::Cluster(format!(
                "{step} is complete on this node, but the cluster could not be updated ({e}): rerun the same command to publish it"
            ))
        };
        record::update(&self.cluster, target, &me.rotation_id, |r| {
            let entry = self.entry(step, true, me, r.entries.get(&self.node));
            r.entries.insert(self.node.clone(), entry);
            Ok(())
        })
        .map_err(unpublished)?;
        let mut notes = Vec::new();
        if let Some(bundle) = me.ca_bundle_pem.as_deref().filter(|_| !me.worker) {
            let count = bundle.matches("BEGIN CERTIFICATE").count();
            match self.cluster.set_cluster_info_ca(bundle).map_err(unpublished)? {
                Some(true) => notes.push(format!(
                    "kube-public/cluster-info now hands joining nodes this node's ca.crt ({count} CA certificate(s)); kube-controller-manager's bootstrap signer signs it again for the bootstrap tokens"
                )),
                Some(false) => {}
                None => notes.push(
                    "kube-public/cluster-info does not exist: nothing to update for joining nodes".into(),
                ),
            }
        }
        Ok(notes)
    }
}

/// How many servers are read at once.
const SERVERS_AT_ONCE: usize = 16;

/// The chain each node's kubelet serves (where its Node status says it serves).
fn read_kubelets(nodes: &[NodeInfo]) -> BTreeMap<String, Served> {
    let endpoints = nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.kubelet_endpoint.clone()?)))
        .collect();
    read_servers(endpoints)
        .into_iter()
        .map(|(name, (_, served))| (name, served))
        .collect()
}

/// The chain presented at each endpoint (by node name), read a few at a time (each read is
/// bounded in time).
fn read_servers(endpoints: BTreeMap<String, String>) -> BTreeMap<String, ServedAt> {
    let endpoints: Vec<(String, String)> = endpoints.into_iter().collect();
    let mut out = BTreeMap::new();
    for batch in endpoints.chunks(SERVERS_AT_ONCE) {
        std::thread::scope(|scope| {
            let reads: Vec<_> = batch
                .iter()
                .map(|(name, at)| (name, at, scope.spawn(move || presented_chain(at))))
                .collect();
            for (name, at, read) in reads {
                let served = read
                    .join()
                    .unwrap_or_else(|_| Err("the read failed".into()));
                out.insert(name.clone(), (at.clone(), served));
            }
        });
    }
    out
}

/// The blockers of a gate, the first 20 of them (`status --kubeconfig` lists them all).
fn summary(blockers: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = blockers
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if blockers.len() > SHOWN {
        text.push_str(&format!("; and {} more", blockers.len() - SHOWN));
    }
    text
}
