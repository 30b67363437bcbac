//! The deployment files under `deploy/` agree with each other and with the real configuration
//! loader of the plugin.
//!
//! One path (the socket, the state directory, the config file, the plugin's uid) is written in
//! several files: the plugin config, the static pod, the host's tmpfiles.d entry, the
//! EncryptionConfiguration, the kube-apiserver patch and kubeadm configuration, the systemd
//! units and the Dockerfile. Each test parses the files involved and fails, naming the file and
//! the value, as soon as one of them drifts from the others. One module per artefact; the
//! readers they share are in the `cross_crate_tests` library.

mod alerts;
mod apiserver;
mod config;
mod image;
mod pods;
mod readme;
mod systemd;
