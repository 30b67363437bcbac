//! The rotation record: one ConfigMap per rotation in `kube-system`, named
//! `pki-rotation-<target>-<rotation id>` and labelled with both, holding one entry per node
//! (`node.<name>`: JSON, see [`NodeEntry`]). Every change reads the object, decides on what it
//! read, and writes it back with the `resourceVersion` it read: when another node wrote in
//! between, the API refuses (409) and the change is decided again on the fresh object. Nothing is
//! ever overwritten blindly, and a malformed entry fails every gate (closed).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::client::Cluster;
use crate::error::{Error, Result};
use crate::rotate::{Move, Target};

/// Where the records live.
pub const NAMESPACE: &str = "kube-system";
/// Label: the rotation target (`ca`, `front-proxy-ca`, `etcd-ca`, `sa`).
pub const TARGET_LABEL: &str = "pki.kubernetes.io/rotation-target";
/// Label: the rotation id.
pub const ID_LABEL: &str = "pki.kubernetes.io/rotation-id";
/// Prefix of a node's key in the ConfigMap's data.
const NODE_KEY: &str = "node.";
/// How many times a change is decided again after another node's write got in first.
const ATTEMPTS: usize = 20;

/// A node's role in a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Holds the CA keys and runs the control-plane components.
    ControlPlane,
    /// Holds only trust files (`ca` rotations only).
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        })
    }
}

/// One node's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeEntry {
    /// Control-plane node or worker.
    pub role: Role,
    /// The last step begun on the node.
    pub step: Move,
    /// Whether that step is complete.
    pub complete: bool,
    /// Pin (`sha256:<hex>`) of the old CA (key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_ca: Option<String>,
    /// Pin of the new CA (key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ca: Option<String>,
    /// Pin of the CA that signed the node's kubelet client certificate (`ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_client_ca: Option<String>,
    /// `sa`: no token signed by the old key is valid after this.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub tokens_valid_until: Option<OffsetDateTime>,
    /// When the entry was written.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl NodeEntry {
    /// The node trusts the new CA (key): `start` is complete, or it went further.
    pub fn trusts_new(&self) -> bool {
        match self.step {
            Move::Start => self.complete,
            Move::Switch | Move::Finish => true,
            Move::Abort => false,
        }
    }

    /// `switch` is complete on the node (or it went on to `finish`).
    pub fn switched(&self) -> bool {
        match self.step {
            Move::Switch => self.complete,
            Move::Finish => true,
            Move::Start | Move::Abort => false,
        }
    }

    /// `switch` has begun on the node: the new CA may have signed what is in use.
    pub fn switch_begun(&self) -> bool {
        matches!(self.step, Move::Switch | Move::Finish)
    }

    /// The rotation is over on the node (finished or aborted).
    pub fn ended(&self) -> bool {
        self.complete && matches!(self.step, Move::Finish | Move::Abort)
    }

    /// `start (in progress)`, `switch (complete)` ...
    pub fn progress(&self) -> String {
        let how = if self.complete {
            "complete"
        } else {
            "in progress"
        };
        format!("{} ({how})", self.step)
    }
}

/// A rotation's record as read from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The target.
    pub target: Target,
    /// The rotation id.
    pub rotation_id: String,
    /// The `resourceVersion` read (`None`: the object does not exist yet).
    pub resource_version: Option<String>,
    /// When the object was created.
    pub created: Option<String>,
    /// Entry per node name.
    pub entries: BTreeMap<String, NodeEntry>,
}

impl Record {
    /// An empty record, not yet in the API.
    pub fn new(target: Target, rotation_id: &str) -> Record {
        Record {
            target,
            rotation_id: rotation_id.to_owned(),
            resource_version: None,
            created: None,
            entries: BTreeMap::new(),
        }
    }

    /// The ConfigMap's name.
    pub fn name(&self) -> String {
        object_name(self.target, &self.rotation_id)
    }

    /// `kube-system/ConfigMap/<name>`, for messages.
    pub fn object(&self) -> String {
        format!("{NAMESPACE}/ConfigMap/{}", self.name())
    }

    /// Some node has not ended the rotation.
    pub fn active(&self) -> bool {
        self.entries.values().any(|e| !e.ended())
    }

    fn from_config_map(target: Target, rotation_id: &str, cm: ConfigMap) -> Result<Record> {
        let mut r = Record::new(target, rotation_id);
        let object = r.object();
        r.resource_version = cm.metadata.resource_version;
        r.created = cm.metadata.creation_timestamp.map(|t| t.0.to_string());
        for (key, value) in cm.data.unwrap_or_default() {
            let Some(node) = key.strip_prefix(NODE_KEY) else {
                continue;
            };
            let entry: NodeEntry = serde_json::from_str(&value).map_err(|e| {
                Error::Cluster(format!(
                    "{object}: the entry of node {node} is damaged ({e}): fix or delete that key"
                ))
            })?;
            r.entries.insert(node.to_owned(), entry);
        }
        Ok(r)
    }

    fn to_config_map(&self) -> Result<ConfigMap> {
        let mut data = BTreeMap::new();
        for (node, entry) in &self.entries {
            let text = serde_json::to_string(entry).map_err(|e| Error::Render {
                what: "rotation record entry",
                reason: e.to_string(),
            })?;
            data.insert(format!("{NODE_KEY}{node}"), text);
        }
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name()),
                namespace: Some(NAMESPACE.to_owned()),
                resource_version: self.resource_version.clone(),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/managed-by".to_owned(), "pki".to_owned()),
                    (TARGET_LABEL.to_owned(), self.target.as_str().to_owned()),
                    (ID_LABEL.to_owned(), self.rotation_id.clone()),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        })
    }
}

/// The ConfigMap name of a rotation.
pub fn object_name(target: Target, rotation_id: &str) -> String {
    format!("pki-rotation-{}-{rotation_id}", target.as_str())
}

/// A rotation id is 1 to 32 lowercase hex digits (it names an object and labels it).
fn check_id(rotation_id: &str) -> Result<()> {
    let ok = !rotation_id.is_empty()
        && rotation_id.len() <= 32
        && rotation_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "rotation id {rotation_id:?} is not 1-32 lowercase hex digits"
        )))
    }
}

fn api(cluster: &Cluster) -> Api<ConfigMap> {
    Api::namespaced(cluster.client(), NAMESPACE)
}

/// The record of one rotation; `Ok(None)` when no node has written it yet.
pub fn load(cluster: &Cluster, target: Target, rotation_id: &str) -> Result<Option<Record>> {
    check_id(rotation_id)?;
    let name = object_name(target, rotation_id);
    cluster
        .call(
            &format!("get {NAMESPACE}/ConfigMap/{name}"),
            api(cluster).get_opt(&name),
        )?
        .map(|cm| Record::from_config_map(target, rotation_id, cm))
        .transpose()
}

/// Every record of `target`'s rotations, oldest first.
pub fn list(cluster: &Cluster, target: Target) -> Result<Vec<Record>> {
    let lp = ListParams::default().labels(&format!("{TARGET_LABEL}={}", target.as_str()));
    let items = cluster
        .call(
            &format!("list {NAMESPACE}/ConfigMaps"),
            api(cluster).list(&lp),
        )?
        .items;
    let mut records = Vec::new();
    for cm in items {
        let Some(id) = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ID_LABEL))
            .cloned()
        else {
            continue;
        };
        if check_id(&id).is_err() || cm.metadata.name.as_deref() != Some(&object_name(target, &id))
        {
            continue;
        }
        records.push(Record::from_config_map(target, &id, cm)?);
    }
    records.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(records)
}

/// Reads the record (an empty one when absent), lets `change` decide on it and change it, and
/// writes it back with the `resourceVersion` read; when another writer got in first, reads again
/// and decides again. `change`'s refusal is returned as is, with nothing written.
pub fn update<T>(
    cluster: &Cluster,
    target: Target,
    rotation_id: &str,
    mut change: impl FnMut(&mut Record) -> Result<T>,
) -> Result<(Record, T)> {
    check_id(rotation_id)?;
    let api = api(cluster);
    for _ in 0..ATTEMPTS {
        let mut record =
            load(cluster, target, rotation_id)?.unwrap_or_else(|| Record::new(target, rotation_id));
        let answer = change(&mut record)?;
        let cm = record.to_config_map()?;
        let what = format!("write {}", record.object());
        let written = match record.resource_version {
            None => cluster.try_call(&what, api.create(&PostParams::default(), &cm))?,
            Some(_) => cluster.try_call(
                &what,
                api.replace(&record.name(), &PostParams::default(), &cm),
            )?,
        };
        match written {
            Ok(cm) => {
                let record = Record::from_config_map(target, rotation_id, cm)?;
                return Ok((record, answer));
            }
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => continue,
            Err(e) => return Err(super::client::api_error(&what, e)),
        }
    }
    Err(Error::Cluster(format!(
        "{}: other nodes kept writing it; {ATTEMPTS} attempts failed, nothing changed: rerun",
        object_name(target, rotation_id)
    )))
}
