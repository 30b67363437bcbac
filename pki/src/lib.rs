//! kubeadm-compatible cluster PKI manager.
#![forbid(unsafe_code)]

pub mod error;
pub mod inspect;
pub mod key;
pub mod store;

pub use error::{Error, Result};
pub mod csr;
pub mod duration;
pub mod expiry;
pub mod init;
pub mod issue;
pub mod kubeadm_config;
pub mod kubeconfig;
pub mod kubelet;
pub mod layout;
pub mod profile;
pub mod renew;
pub mod spec;
