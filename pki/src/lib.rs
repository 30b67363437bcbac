//! kubeadm-compatible cluster PKI manager (filled by the PKI issue).
#![forbid(unsafe_code)]
