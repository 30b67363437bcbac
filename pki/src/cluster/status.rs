//! The whole cluster's side of `pki rotate <target> status --kubeconfig`: every rotation record
//! of the target, each node's entry beside the registered Nodes, and what each gate would say
//! now.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use super::client::{Cluster, NodeInfo};
use super::gate::{View, gates_for};
use super::record::{self, Record, Role};
use crate::error::Result;
use crate::rotate::state::format_rfc3339;
use crate::rotate::{Move, Target};

/// One node's line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLine {
    /// Node name.
    pub node: String,
    /// `control-plane` or `worker`.
    pub role: String,
    /// Registered as a Node object.
    pub registered: bool,
    /// `switch (complete)` ..., or `not started`.
    pub progress: String,
    /// Pin of the new CA it holds.
    pub new_ca: Option<String>,
    /// Pin of the CA of its kubelet client certificate.
    pub kubelet_client_ca: Option<String>,
    /// When its entry was written.
    pub updated_at: Option<String>,
}

impl NodeLine {
    /// The line of a node with no entry in the record (yet).
    fn not_started(node: &str, role: Role, registered: bool) -> NodeLine {
        NodeLine {
            node: node.to_owned(),
            role: role.to_string(),
            registered,
            progress: "not started".into(),
            new_ca: None,
            kubelet_client_ca: None,
            updated_at: None,
        }
    }
}

/// A gate as it stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateLine {
    /// The step it guards.
    pub step: Move,
    /// Its name.
    pub gate: &'static str,
    /// What stands in its way (empty: open).
    pub blockers: Vec<String>,
}

/// One rotation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationLines {
    /// The rotation id.
    pub rotation_id: String,
    /// `kube-system/ConfigMap/...`.
    pub object: String,
    /// Some node has not ended it.
    pub active: bool,
    /// One line per node.
    pub nodes: Vec<NodeLine>,
    /// The gates of switch, finish and abort, as a control-plane node would meet them.
    pub gates: Vec<GateLine>,
}

/// The cluster report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// The target.
    pub target: Target,
    /// Every rotation of the target recorded in the cluster, oldest first.
    pub rotations: Vec<RotationLines>,
}

/// Reads every record of `target` and the Nodes.
pub fn collect(cluster: &Cluster, target: Target) -> Result<ClusterReport> {
    let nodes = cluster.nodes()?;
    let records = record::list(cluster, target)?;
    let csrs = if target == Target::Ca {
        cluster.kubelet_client_csrs()?
    } else {
        BTreeMap::new()
    };
    let rotations = records.iter().map(|r| rotation(r, &nodes, &csrs)).collect();
    Ok(ClusterReport { target, rotations })
}

fn rotation(
    r: &Record,
    nodes: &[NodeInfo],
    csrs: &BTreeMap<String, super::client::KubeletClientCsr>,
) -> RotationLines {
    let mut lines: BTreeMap<String, NodeLine> = BTreeMap::new();
    for n in nodes {
        if !n.control_plane && r.target != Target::Ca {
            continue;
        }
        let role = if n.control_plane {
            Role::ControlPlane
        } else {
            Role::Worker
        };
        lines.insert(n.name.clone(), NodeLine::not_started(&n.name, role, true));
    }
    for (name, e) in &r.entries {
        let line = lines
            .entry(name.clone())
            .or_insert_with(|| NodeLine::not_started(name, e.role, false));
        line.role = e.role.to_string();
        line.progress = e.progress();
        line.new_ca = e.new_ca.clone();
        line.kubelet_client_ca = e.kubelet_client_ca.clone();
        line.updated_at = Some(format_rfc3339(e.updated_at));
    }
    // The gates as a control-plane node holding the majority's new CA would meet them.
    let new_ca = majority(r.entries.values().filter_map(|e| e.new_ca.as_deref()));
    let view = View {
        record: r,
        nodes,
        other_active: &[],
        kubelet_csrs: csrs,
        kubelet_serving: None,
        apiserver_serving: None,
        me: None,
        worker: false,
        new_ca,
        new_ca_pem: None,
        old_ca_pem: None,
        handout: None,
        now: OffsetDateTime::now_utc(),
    };
    let gates = [Move::Switch, Move::Finish, Move::Abort]
        .into_iter()
        .flat_map(|step| {
            gates_for(step, &view).into_iter().map(move |g| GateLine {
                step,
                gate: g.name,
                blockers: g.blockers,
            })
        })
        .filter(|g| {
            g.gate != "kubelet-client-certificates-from-the-new-ca" || !g.blockers.is_empty()
        })
        .collect();
    RotationLines {
        rotation_id: r.rotation_id.clone(),
        object: r.object(),
        active: r.active(),
        nodes: lines.into_values().collect(),
        gates,
    }
}

fn majority<'a>(pins: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for p in pins {
        *count.entry(p).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p)
}

impl ClusterReport {
    /// Human-readable form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.rotations.is_empty() {
            out.push_str(&format!("cluster: no {} rotation recorded\n", self.target));
        }
        for r in &self.rotations {
            let state = if r.active {
                "under way"
            } else {
                "ended on every node"
            };
            out.push_str(&format!(
                "cluster: {} rotation {} ({}), {state}\n",
                self.target, r.rotation_id, r.object
            ));
            for n in &r.nodes {
                let registered = if n.registered {
                    ""
                } else {
                    " [no Node object]"
                };
                let pin = n.new_ca.as_deref().map(short).unwrap_or("-");
                out.push_str(&format!(
                    "  {:<24} {:<13} {:<22} new {pin}{}{registered}\n",
                    n.node,
                    n.role,
                    n.progress,
                    n.kubelet_client_ca
                        .as_deref()
                        .map(|k| format!(", kubelet client {}", short(k)))
                        .unwrap_or_default()
                ));
            }
            if !r.active {
                continue;
            }
            for g in &r.gates {
                if g.blockers.is_empty() {
                    out.push_str(&format!("  {}: `{}` open\n", g.step, g.gate));
                } else {
                    out.push_str(&format!(
                        "  {}: `{}` closed: {}\n",
                        g.step,
                        g.gate,
                        g.blockers.join("; ")
                    ));
                }
            }
        }
        out
    }
}

/// `sha256:` and the first 16 hex digits.
fn short(pin: &str) -> &str {
    pin.get(..23).unwrap_or(pin)
}
