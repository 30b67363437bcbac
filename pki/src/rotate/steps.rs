//! The step table: which steps each phase of each target has, in order, and the marker each
//! step records in the state file once done.
//!
//! | phase | steps |
//! |---|---|
//! | `start` | stage the old CA (key), generate the new one, old signer files (`ca`), point kube-controller-manager at them (`ca`, with `--manifests-dir`), anchor old+new, kubeconfig CA data old+new (`ca`) |
//! | `switch` | re-issue every leaf, re-issue kubeconfig clients with CA data new+old (`ca`), new signer files (`ca`), anchor new+old |
//! | `finish` | anchor new, kubeconfig CA data new (`ca`), restore kube-controller-manager's flags (`ca`, with `--manifests-dir`), remove the signer files (`ca`), unstage |

use std::path::PathBuf;

use super::plan::{Phase, Plan};
use crate::profile::LeafProfile;

/// One of the two CAs (or keys) of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generation {
    /// The CA (key) in use before the rotation.
    Old,
    /// The CA (key) generated at `start`.
    New,
}

impl Generation {
    fn name(self) -> &'static str {
        match self {
            Generation::Old => "old",
            Generation::New => "new",
        }
    }
}

/// Which trust set a bundle holds, signer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bundle {
    /// Old (signing) then new.
    OldNew,
    /// New (signing) then old.
    NewOld,
    /// New only.
    New,
}

impl Bundle {
    /// The CAs (keys) of the bundle, in file order: the first one signs.
    pub(crate) fn entries(self) -> &'static [Generation] {
        match self {
            Bundle::OldNew => &[Generation::Old, Generation::New],
            Bundle::NewOld => &[Generation::New, Generation::Old],
            Bundle::New => &[Generation::New],
        }
    }

    /// The CA (key) whose private key sits beside the bundle.
    pub(crate) fn signer(self) -> Generation {
        self.entries()[0]
    }

    fn name(self) -> &'static str {
        match self {
            Bundle::OldNew => "old+new",
            Bundle::NewOld => "new+old",
            Bundle::New => "new",
        }
    }
}

/// What happens to a kubeconfig's embedded client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientCert {
    /// Left as it is.
    Keep,
    /// Re-issued from the new CA (same subject, fresh key) unless it already is.
    Reissue,
}

/// One idempotent step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Copy the current CA (or key) to the staging area, verbatim.
    StageOld,
    /// Generate the new CA (or key) in the staging area.
    StageNew,
    /// Write the single-certificate signer files from this CA.
    Signer(Generation),
    /// Point kube-controller-manager's signing flags at the signer files.
    ManifestsToSigner,
    /// Put kube-controller-manager's signing flags back to their original values.
    ManifestsRestore,
    /// Write the trust anchor (CA bundle or `sa.pub`) and the key file matching its first entry.
    Anchor(Bundle),
    /// Rewrite a kubeconfig's CA data, and its client certificate as told.
    Kubeconfig {
        /// The kubeconfig file.
        file: PathBuf,
        /// Its new CA data.
        trust: Bundle,
        /// Its client certificate.
        client: ClientCert,
    },
    /// Re-issue a leaf from the new CA (same subject, SANs, usages; fresh key).
    Leaf(&'static LeafProfile),
    /// Remove the signer files.
    RemoveSigner,
    /// Remove the staging area (the old key stays in the backups).
    Unstage,
}

impl Step {
    /// The marker recorded in the state file once the step is done. These texts are in state
    /// files of interrupted rotations: they never change.
    pub(crate) fn name(&self, plan: &Plan) -> String {
        match self {
            Step::StageOld => "stage-old".into(),
            Step::StageNew => "stage-new".into(),
            Step::Signer(g) => format!("signer:{}", g.name()),
            Step::ManifestsToSigner => "manifests:signer".into(),
            Step::ManifestsRestore => "manifests:restore".into(),
            Step::Anchor(b) => format!("anchor:{}", b.name()),
            Step::Kubeconfig { file, trust, .. } => {
                format!("kubeconfig:{}:{}", plan.label(file), trust.name())
            }
            Step::Leaf(l) => format!("leaf:{}", l.name),
            Step::RemoveSigner => "signer:remove".into(),
            Step::Unstage => "unstage".into(),
        }
    }
}

/// The steps of `phase` for `plan`, in order.
pub(crate) fn steps(plan: &Plan, phase: Phase) -> Vec<Step> {
    let signer = plan.signer().is_some();
    let manifest = plan.kcm_manifest().is_some();
    let kubeconfigs = |trust: Bundle, client: ClientCert| {
        plan.kubeconfigs()
            .into_iter()
            .map(move |file| Step::Kubeconfig {
                file,
                trust,
                client,
            })
    };
    let mut v = Vec::new();
    match phase {
        Phase::Start => {
            v.extend([Step::StageOld, Step::StageNew]);
            v.extend(signer.then_some(Step::Signer(Generation::Old)));
            v.extend(manifest.then_some(Step::ManifestsToSigner));
            v.push(Step::Anchor(Bundle::OldNew));
            v.extend(kubeconfigs(Bundle::OldNew, ClientCert::Keep));
        }
        Phase::Switch => {
            v.extend(plan.leaves().into_iter().map(Step::Leaf));
            v.extend(kubeconfigs(Bundle::NewOld, ClientCert::Reissue));
            // The signer switches before the anchor's first entry (and its key) does.
            v.extend(signer.then_some(Step::Signer(Generation::New)));
            v.push(Step::Anchor(Bundle::NewOld));
        }
        Phase::Finish => {
            // The anchor is a single certificate again before the manifest points back at it.
            v.push(Step::Anchor(Bundle::New));
            v.extend(kubeconfigs(Bundle::New, ClientCert::Keep));
            v.extend(manifest.then_some(Step::ManifestsRestore));
            v.extend(signer.then_some(Step::RemoveSigner));
            v.push(Step::Unstage);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::rotate::plan::Target;

    fn names(plan: &Plan, phase: Phase) -> Vec<String> {
        steps(plan, phase).iter().map(|s| s.name(plan)).collect()
    }

    #[test]
    fn step_order_per_phase() {
        let layout = Layout::new("/k/pki", "/k");
        let ca = Plan::new(Target::Ca, layout.clone(), Some("/m".into()));
        let start = names(&ca, Phase::Start);
        assert_eq!(
            start[..5],
            [
                "stage-old",
                "stage-new",
                "signer:old",
                "manifests:signer",
                "anchor:old+new"
            ]
        );
        assert_eq!(start.len(), 5 + 5, "five kubeconfigs");
        assert_eq!(start[5], "kubeconfig:kubeconfig/admin.conf:old+new");
        let switch = names(&ca, Phase::Switch);
        assert_eq!(switch[0], "leaf:apiserver");
        assert_eq!(switch[switch.len() - 2..], ["signer:new", "anchor:new+old"]);
        let finish = names(&ca, Phase::Finish);
        let anchor = finish.iter().position(|n| n == "anchor:new");
        let restore = finish.iter().position(|n| n == "manifests:restore");
        assert!(anchor < restore && anchor.is_some());
        assert_eq!(finish[finish.len() - 2..], ["signer:remove", "unstage"]);

        let without_manifests = Plan::new(Target::Ca, layout.clone(), None);
        assert!(!names(&without_manifests, Phase::Start).contains(&"manifests:signer".into()));

        let etcd = Plan::new(Target::EtcdCa, layout.clone(), Some("/m".into()));
        assert_eq!(
            names(&etcd, Phase::Start),
            ["stage-old", "stage-new", "anchor:old+new"]
        );
        assert_eq!(names(&etcd, Phase::Switch).len(), 4 + 1, "four leaves");

        let sa = Plan::new(Target::Sa, layout, None);
        assert_eq!(
            names(&sa, Phase::Start),
            ["stage-old", "stage-new", "anchor:old+new"]
        );
        assert_eq!(names(&sa, Phase::Switch), ["anchor:new+old"]);
        assert_eq!(names(&sa, Phase::Finish), ["anchor:new", "unstage"]);
    }

    #[test]
    fn kubeconfigs_are_reissued_only_at_switch() {
        let plan = Plan::new(Target::Ca, Layout::new("/k/pki", "/k"), None);
        for (phase, expected) in [
            (Phase::Start, ClientCert::Keep),
            (Phase::Switch, ClientCert::Reissue),
            (Phase::Finish, ClientCert::Keep),
        ] {
            for step in steps(&plan, phase) {
                if let Step::Kubeconfig { client, .. } = step {
                    assert_eq!(client, expected, "{phase}");
                }
            }
        }
    }

    #[test]
    fn the_first_entry_of_a_bundle_signs() {
        assert_eq!(Bundle::OldNew.signer(), Generation::Old);
        assert_eq!(Bundle::NewOld.signer(), Generation::New);
        assert_eq!(Bundle::New.entries(), [Generation::New]);
    }
}
