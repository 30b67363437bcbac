//! kubeconfig files with embedded CA data and client credentials, in kubeadm's shape.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle};
use crate::key::PrivateKey;

/// The cluster name kubeadm uses.
pub const CLUSTER_NAME: &str = "kubernetes";

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Config {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    preferences: serde_yaml_ng::Mapping,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Serialize, Deserialize)]
struct NamedCluster {
    cluster: Cluster,
    name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_authority: Option<String>,
    #[serde(default)]
    server: String,
}

#[derive(Serialize, Deserialize)]
struct NamedContext {
    context: Context,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize, Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
}

impl Drop for User {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = self.client_key_data.as_mut() {
            k.zeroize();
        }
    }
}

/// Renders a kubeconfig like kubeadm's: one cluster `kubernetes`, one user named after the
/// certificate CN, context `<user>@kubernetes`, everything embedded.
pub fn render(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert: &Cert,
    key: &PrivateKey,
) -> Result<Zeroizing<String>> {
    render_named(CLUSTER_NAME, server, ca_pem, user, cert, key)
}

/// [`render`] for a cluster named `cluster` (kubeadm's `clusterName`): cluster `<cluster>`,
/// context `<user>@<cluster>`.
pub fn render_named(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert: &Cert,
    key: &PrivateKey,
) -> Result<Zeroizing<String>> {
    render_embedded(cluster, server, Some(ca_pem), user, Some(cert), key)
}

/// Renders a kubeconfig whose client certificate and key are read from `client_pem` (one file
/// holding both, as the kubelet's `kubelet-client-current.pem`), so the kubelet can rotate them.
pub fn render_with_files(
    server: &str,
    ca_pem: &str,
    user: &str,
    client_pem: &Path,
) -> Result<Zeroizing<String>> {
    let file = client_pem.to_string_lossy().into_owned();
    let credentials = User {
        client_certificate_data: None,
        client_key_data: None,
        client_certificate: Some(file.clone()),
        client_key: Some(file),
    };
    let config = single_context(
        CLUSTER_NAME,
        server,
        Some(ca_pem),
        user,
        "default-auth",
        credentials,
    );
    to_yaml(&config)
}

/// A kubeconfig with one cluster, one user named `user_entry` and the context
/// `<user>@<cluster>` joining them, current.
fn single_context(
    cluster: &str,
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    user_entry: &str,
    credentials: User,
) -> Config {
    let context = format!("{user}@{cluster}");
    Config {
        api_version: "v1".to_owned(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: ca_pem.map(|pem| STANDARD.encode(pem)),
                certificate_authority: None,
                server: server.to_owned(),
            },
            name: cluster.to_owned(),
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: cluster.to_owned(),
                user: user_entry.to_owned(),
            },
            name: context.clone(),
        }],
        current_context: context,
        kind: "Config".to_owned(),
        preferences: serde_yaml_ng::Mapping::new(),
        users: vec![NamedUser {
            name: user_entry.to_owned(),
            user: credentials,
        }],
    }
}

/// Renders kubeadm's partial kubeconfig of `certs generate-csr`: cluster `<cluster>` with only
/// the server (no CA data yet), user `<user>` with only the client key; the external CA's
/// operator adds `client-certificate-data` (and `init` the CA data) later.
pub fn render_key_only(
    cluster: &str,
    server: &str,
    user: &str,
    key: &PrivateKey,
) -> Result<Zeroizing<String>> {
    render_embedded(cluster, server, None, user, None, key)
}

/// A kubeconfig of one cluster and one user named `user` whose key (and certificate, when
/// given) is embedded; the CA data is embedded when given.
fn render_embedded(
    cluster: &str,
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    cert: Option<&Cert>,
    key: &PrivateKey,
) -> Result<Zeroizing<String>> {
    let credentials = User {
        client_certificate_data: cert.map(|cert| STANDARD.encode(cert.pem())),
        client_key_data: Some(STANDARD.encode(key.pem())),
        client_certificate: None,
        client_key: None,
    };
    to_yaml(&single_context(
        cluster,
        server,
        ca_pem,
        user,
        user,
        credentials,
    ))
}

/// The YAML text of a kubeconfig holding credentials, wiped on drop.
fn to_yaml(config: &impl serde::Serialize) -> Result<Zeroizing<String>> {
    serde_yaml_ng::to_string(config)
        .map(Zeroizing::new)
        .map_err(|e| Error::Render {
            what: "kubeconfig",
            reason: e.to_string(),
        })
}

/// The credentials found in a kubeconfig (of its current context).
#[derive(Debug)]
#[non_exhaustive]
pub struct Kubeconfig {
    /// API server URL.
    pub server: String,
    /// CA certificates (embedded data or referenced file), possibly a bundle.
    pub ca: Vec<Cert>,
    /// Client certificate, if any.
    pub client_cert: Option<Cert>,
    /// Client key, if embedded or referenced.
    pub client_key: Option<PrivateKey>,
}

/// Parses a kubeconfig, resolving `client-certificate`/`client-key`/`certificate-authority`
/// file references relative to the kubeconfig's directory.
pub fn parse(text: &str, path: &Path) -> Result<Kubeconfig> {
    let cfg: Config = serde_yaml_ng::from_str(text).map_err(|e| Error::parse(path, e))?;
    let ctx = cfg
        .contexts
        .iter()
        .find(|c| c.name == cfg.current_context)
        .or_else(|| cfg.contexts.first())
        .map(|c| &c.context);
    let cluster = ctx
        .and_then(|c| cfg.clusters.iter().find(|n| n.name == c.cluster))
        .or_else(|| cfg.clusters.first())
        .ok_or_else(|| Error::parse(path, "no cluster"))?;
    let user = ctx
        .and_then(|c| cfg.users.iter().find(|n| n.name == c.user))
        .or_else(|| cfg.users.first());
    let base = path.parent().unwrap_or(Path::new("."));
    let ca = match (
        &cluster.cluster.certificate_authority_data,
        &cluster.cluster.certificate_authority,
    ) {
        (Some(data), _) => parse_bundle(&decode(data, path)?, path)?,
        (None, Some(file)) => parse_bundle(&read_ref(base, file)?, &base.join(file))?,
        (None, None) => Vec::new(),
    };
    let mut client_cert = None;
    let mut client_key = None;
    if let Some(u) = user {
        let u = &u.user;
        let cert_text = match (&u.client_certificate_data, &u.client_certificate) {
            (Some(d), _) => Some(decode(d, path)?),
            (None, Some(f)) => Some(read_ref(base, f)?),
            _ => None,
        };
        if let Some(t) = cert_text {
            client_cert = Some(Cert::from_pem(&t, path)?);
        }
        let key_text = match (&u.client_key_data, &u.client_key) {
            (Some(d), _) => Some(Zeroizing::new(decode(d, path)?)),
            (None, Some(f)) => Some(Zeroizing::new(read_ref(base, f)?)),
            _ => None,
        };
        if let Some(t) = key_text {
            client_key = Some(PrivateKey::from_pem(&t, path)?);
        }
    }
    Ok(Kubeconfig {
        server: cluster.cluster.server.clone(),
        ca,
        client_cert,
        client_key,
    })
}

fn decode(data: &str, path: &Path) -> Result<String> {
    let bytes = STANDARD
        .decode(data.trim())
        .map_err(|e| Error::parse(path, format!("base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Error::parse(path, "embedded data is not PEM text"))
}

fn read_ref(base: &Path, file: &str) -> Result<String> {
    let p = base.join(file);
    std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))
}

/// Rewrites a kubeconfig in place, keeping every other field: sets the embedded CA data of
/// the current context's cluster to `ca_pem` (a cluster that references a CA file instead keeps
/// the reference; other clusters are left alone),
/// and, when `client` is given, the embedded client certificate and key of the current
/// context's user. Returns `Ok(None)` when `client` is given but the user's credentials are
/// file references (as in a kubelet.conf that points at `kubelet-client-current.pem`), which
/// this function leaves to their owner.
pub fn rewrite_embedded(
    text: &str,
    path: &Path,
    ca_pem: &str,
    client: Option<(&Cert, &PrivateKey)>,
) -> Result<Option<Zeroizing<String>>> {
    use serde_yaml_ng::Value;
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|e| Error::parse(path, e))?;
    let ca_key = Value::from("certificate-authority-data");
    // Only the current context's cluster: other clusters of the file belong to someone else.
    let cluster_name = context_field(&doc, "cluster");
    let cluster = named_entry(&mut doc, "clusters", cluster_name.as_deref(), path)?;
    if let Some(m) = cluster
        .and_then(|c| c.get_mut("cluster"))
        .and_then(Value::as_mapping_mut)
        && (m.contains_key(&ca_key) || !m.contains_key("certificate-authority"))
    {
        m.insert(ca_key.clone(), Value::from(STANDARD.encode(ca_pem)));
    }
    if let Some((cert, key)) = client {
        let user_name = context_field(&doc, "user");
        let user = named_entry(&mut doc, "users", user_name.as_deref(), path)?
            .and_then(|u| u.get_mut("user"))
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| Error::parse(path, "no user for the current context"))?;
        if !user.contains_key("client-certificate-data") {
            return Ok(None);
        }
        user.insert(
            Value::from("client-certificate-data"),
            Value::from(STANDARD.encode(cert.pem())),
        );
        user.insert(
            Value::from("client-key-data"),
            Value::from(STANDARD.encode(key.pem())),
        );
    }
    to_yaml(&doc).map(Some)
}

/// What the current context names as its `field` (`cluster` or `user`).
fn context_field(doc: &serde_yaml_ng::Value, field: &str) -> Option<String> {
    current_context(doc)
        .and_then(|c| c.get(field))
        .and_then(serde_yaml_ng::Value::as_str)
        .map(str::to_owned)
}

/// The entry called `name` of the list `list` (`clusters` or `users`), or its first entry when
/// no name is given; an error when the list is missing.
fn named_entry<'a>(
    doc: &'a mut serde_yaml_ng::Value,
    list: &str,
    name: Option<&str>,
    path: &Path,
) -> Result<Option<&'a mut serde_yaml_ng::Value>> {
    use serde_yaml_ng::Value;
    let entries = doc
        .get_mut(list)
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| Error::parse(path, format!("no {list}")))?;
    Ok(match name {
        Some(n) => entries
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(n)),
        None => entries.first_mut(),
    })
}

/// The current context's `context` mapping (the first context when none is current).
fn current_context(doc: &serde_yaml_ng::Value) -> Option<&serde_yaml_ng::Value> {
    use serde_yaml_ng::Value;
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or_default();
    doc.get("contexts")
        .and_then(Value::as_sequence)
        .and_then(|s| {
            s.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(current))
                .or_else(|| s.first())
        })
        .and_then(|c| c.get("context"))
}

/// True when the current context's user has an embedded client certificate
/// (`client-certificate-data`) rather than a file reference.
pub fn client_is_embedded(text: &str, path: &Path) -> Result<bool> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| Error::parse(path, e))?;
    let current = doc
        .get("current-context")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let contexts = doc.get("contexts").and_then(Value::as_sequence);
    let user_name = contexts
        .and_then(|s| {
            s.iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(current))
                .or_else(|| s.first())
        })
        .and_then(|c| c.get("context"))
        .and_then(|c| c.get("user"))
        .and_then(Value::as_str);
    let users = doc.get("users").and_then(Value::as_sequence);
    let user = users.and_then(|us| match user_name {
        Some(n) => us
            .iter()
            .find(|u| u.get("name").and_then(Value::as_str) == Some(n)),
        None => us.first(),
    });
    Ok(user
        .and_then(|u| u.get("user"))
        .is_some_and(|u| u.get("client-certificate-data").is_some()))
}
