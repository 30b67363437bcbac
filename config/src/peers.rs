//! Which local processes may connect to a socket, by the uid and gid the kernel reports for them.

use serde::Deserialize;

/// An allowlist checked against each connecting peer's credentials (`SO_PEERCRED`): a peer whose
/// uid is in `uids` or whose gid is in `gids` may connect; any other is refused.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowedPeers {
    /// Numeric user ids allowed to connect.
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Numeric group ids allowed to connect (the peer's primary gid).
    #[serde(default)]
    pub gids: Vec<u32>,
}

impl AllowedPeers {
    /// Whether a peer with this uid and gid may connect.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }

    /// Whether the list admits nobody (a configuration mistake, refused at validation).
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_or_gid_admits() {
        let peers = AllowedPeers {
            uids: vec![0],
            gids: vec![42],
        };
        assert!(peers.allows(0, 7));
        assert!(peers.allows(1000, 42));
        assert!(!peers.allows(1000, 1000));
        assert!(AllowedPeers::default().is_empty());
    }
}
