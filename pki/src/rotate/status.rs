//! `rotate status`: where a rotation stands, what every trust anchor and signer file holds, and
//! what must restart before the next phase.

use std::path::Path;

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use time::OffsetDateTime;

use super::admission::next_command;
use super::anchor::public_keys;
use super::plan::{self, Plan, Target};
use super::restart::{self, RestartStep};
use super::state::{self, State};
use crate::error::{Error, Result};
use crate::inspect::{Cert, parse_bundle, same_public_key};
use crate::layout::{self, Layout};
use crate::store;

/// One certificate or public key in a file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    /// Subject CN of a certificate, or `kid <id>` of a public key (kube-apiserver's key id).
    pub subject: String,
    /// SHA-256 of the DER certificate (or public key), hex.
    pub sha256: String,
    /// End of validity (certificates).
    pub not_after: Option<String>,
    /// `old` or `new` relative to the rotation in progress, when known.
    pub role: Option<&'static str>,
    /// True when the key file beside the anchor (or the signer key) matches this entry.
    pub signer: bool,
}

/// A trust anchor, signer or kubeconfig.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// The file (`pki/ca.crt`, `kubeconfig/admin.conf` ...).
    pub file: String,
    /// `trust-bundle`, `signer`, `public-keys` or `kubeconfig-ca-data`.
    pub kind: &'static str,
    /// Number of certificates or keys.
    pub count: usize,
    /// The entries, in file order.
    pub entries: Vec<EntryReport>,
}

/// The rotation in progress (or the last one).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    /// The target.
    pub target: Target,
    /// The rotation's id, the same on every node that joined it.
    pub rotation_id: Option<String>,
    /// The last completed phase (`None` before `start` completed).
    pub phase: Option<super::Phase>,
    /// `in-progress`, `aborting`, `finished` or `aborted`.
    pub status: state::Status,
    /// Completed phases.
    pub completed: Vec<super::Phase>,
    /// Interrupted phase with its done steps.
    pub running: Option<state::Running>,
    /// When `start` began.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When `switch` completed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub switched_at: Option<OffsetDateTime>,
    /// For `sa`: `finish` is refused before this time without `--force`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finish_not_before: Option<OffsetDateTime>,
    /// Backups taken (relative to `.rotation`).
    pub backups: Vec<String>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The rotation, if one was ever started here.
    pub rotation: Option<RotationReport>,
    /// Trust anchors, signer files and kubeconfig CA data.
    pub files: Vec<FileReport>,
    /// Restarts required (after the last completed phase) before the next phase.
    pub restart_before_next: Vec<RestartStep>,
    /// The next command.
    pub next: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// kube-apiserver's key id for a public key: unpadded base64url of SHA-256 of the DER SPKI.
pub fn key_id(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

fn cert_entry(c: &Cert, role: Option<&'static str>, signer: bool) -> EntryReport {
    EntryReport {
        subject: c.info().common_name.clone(),
        sha256: hex(&Sha256::digest(c.der())),
        not_after: Some(state::format_rfc3339(c.info().not_after)),
        role,
        signer,
    }
}

struct Roles {
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
}

impl Roles {
    fn of(&self, spki: &[u8]) -> Option<&'static str> {
        if self
            .old
            .as_deref()
            .is_some_and(|o| same_public_key(o, spki))
        {
            Some("old")
        } else if self
            .new
            .as_deref()
            .is_some_and(|n| same_public_key(n, spki))
        {
            Some("new")
        } else {
            None
        }
    }
}

fn roles(plan: &Plan) -> Roles {
    let spki = |p: &Path| -> Option<Vec<u8>> {
        layout::load_key(p)
            .ok()
            .flatten()
            .map(|k| k.public_key_der())
    };
    Roles {
        old: spki(&plan.staged_old_key()),
        new: spki(&plan.staged_new_key()),
    }
}

fn cert_file(
    path: &Path,
    label: String,
    kind: &'static str,
    key: Option<&Path>,
    roles: &Roles,
) -> Result<Option<FileReport>> {
    let Some(text) = store::read_optional(path)? else {
        return Ok(None);
    };
    let certs = parse_bundle(&text, path)?;
    let key = match key {
        Some(k) => layout::load_key(k)?,
        None => None,
    };
    let entries = certs
        .iter()
        .map(|c| {
            let signer = key.as_ref().is_some_and(|k| c.matches_key(k));
            cert_entry(c, roles.of(&c.info().spki_der), signer)
        })
        .collect::<Vec<_>>();
    Ok(Some(FileReport {
        file: label,
        kind,
        count: entries.len(),
        entries,
    }))
}

/// Collects the status of every target's files in `layout`.
pub fn collect(layout: &Layout) -> Result<StatusReport> {
    let state_path = plan::state_path(layout);
    let s: Option<State> = state::load(&state_path)?;
    let manifests = s.as_ref().and_then(|s| s.manifests_dir.clone());
    let mut files = Vec::new();
    for target in Target::ALL {
        let plan = Plan::new(target, layout.clone(), manifests.clone());
        let active = s
            .as_ref()
            .is_some_and(|s| s.is_active() && s.target == target);
        let r = if active {
            roles(&plan)
        } else {
            Roles {
                old: None,
                new: None,
            }
        };
        let anchor = plan.anchor();
        if target == Target::Sa {
            let Some(text) = store::read_optional(&anchor)? else {
                continue;
            };
            let signing = layout::load_key(&plan.key())?.map(|k| k.public_key_der());
            let entries: Vec<EntryReport> = public_keys(&text, &anchor)?
                .iter()
                .map(|spki| EntryReport {
                    subject: format!("kid {}", key_id(spki)),
                    sha256: hex(&Sha256::digest(spki)),
                    not_after: None,
                    role: r.of(spki),
                    signer: signing.as_deref().is_some_and(|k| same_public_key(k, spki)),
                })
                .collect();
            files.push(FileReport {
                file: plan.label(&anchor),
                kind: "public-keys",
                count: entries.len(),
                entries,
            });
            continue;
        }
        files.extend(cert_file(
            &anchor,
            plan.label(&anchor),
            "trust-bundle",
            Some(&plan.key()),
            &r,
        )?);
        if let Some((crt, key)) = plan.signer() {
            files.extend(cert_file(&crt, plan.label(&crt), "signer", Some(&key), &r)?);
        }
        for kc in plan.kubeconfigs() {
            let Some(text) = store::read_secret_optional(&kc)? else {
                continue;
            };
            let parsed = match crate::kubeconfig::parse(&text, &kc) {
                Ok(p) => p,
                Err(Error::Io { .. }) => continue,
                Err(e) => return Err(e),
            };
            let entries: Vec<EntryReport> = parsed
                .ca
                .iter()
                .map(|c| cert_entry(c, r.of(&c.info().spki_der), false))
                .collect();
            files.push(FileReport {
                file: plan.label(&kc),
                kind: "kubeconfig-ca-data",
                count: entries.len(),
                entries,
            });
        }
    }
    let (rotation, restart_before_next, next) = match &s {
        Some(s) => {
            let restart_before_next = if s.is_active() {
                match (s.running.as_ref(), s.last_completed()) {
                    (None, Some(p)) => restart::sequence(s.target, Some(p)),
                    _ => Vec::new(),
                }
            } else {
                Vec::new()
            };
            (
                Some(RotationReport {
                    target: s.target,
                    rotation_id: s.rotation_id.clone(),
                    phase: s.last_completed(),
                    status: s.status,
                    completed: s.completed.clone(),
                    running: s.running.clone(),
                    started_at: s.started_at,
                    switched_at: s.switched_at,
                    finish_not_before: (s.target == Target::Sa)
                        .then(|| s.tokens_valid_until())
                        .flatten(),
                    backups: s.backups.clone(),
                }),
                restart_before_next,
                next_command(s),
            )
        }
        None => (None, Vec::new(), None),
    };
    Ok(StatusReport {
        rotation,
        files,
        restart_before_next,
        next,
    })
}

impl StatusReport {
    /// Human-readable rendering.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        match &self.rotation {
            None => out.push_str("No rotation has been started here.\n"),
            Some(r) => {
                let phases: Vec<&str> = r.completed.iter().map(|p| p.as_str()).collect();
                out.push_str(&format!(
                    "Rotation of {}: {} (completed phases: {}; started {})\n",
                    r.target,
                    serde_json::to_value(r.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    if phases.is_empty() {
                        "none".to_owned()
                    } else {
                        phases.join(", ")
                    },
                    state::format_rfc3339(r.started_at)
                ));
                if let Some(id) = &r.rotation_id {
                    out.push_str(&format!("  rotation id {id}\n"));
                }
                if let Some(run) = &r.running {
                    out.push_str(&format!(
                        "  phase {} was interrupted after {} step(s): {}\n",
                        run.phase,
                        run.steps_done.len(),
                        run.steps_done.join(", ")
                    ));
                }
                if let Some(t) = r.finish_not_before {
                    out.push_str(&format!(
                        "  finish is refused before {} without --force\n",
                        state::format_rfc3339(t)
                    ));
                }
            }
        }
        out.push_str("\nFiles:\n");
        for f in &self.files {
            out.push_str(&format!(
                "  {} ({}, {} entr{})\n",
                f.file,
                f.kind,
                f.count,
                if f.count == 1 { "y" } else { "ies" }
            ));
            for e in &f.entries {
                out.push_str(&format!(
                    "    - {} sha256:{}{}{}\n",
                    e.subject,
                    &e.sha256[..16.min(e.sha256.len())],
                    e.role.map(|r| format!(" [{r}]")).unwrap_or_default(),
                    if e.signer { " [signer]" } else { "" }
                ));
            }
        }
        if !self.restart_before_next.is_empty() {
            out.push_str("\nBefore the next phase, follow this sequence (if not done yet):\n");
            out.push_str(&restart::render(&self.restart_before_next));
        }
        if let Some(n) = &self.next {
            out.push_str(&format!("\nNext: {n}\n"));
        }
        out
    }
}
