//! Which process listens on a component's address, read from `/proc` (static pods of the
//! control plane use the host network, and the host's `/proc` shows every process): a restart
//! is proven by another process listening there afterwards, not by a health endpoint the old
//! process would also answer (kube-apiserver and etcd serve renewed certificates without one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// A process: its id and its start time (clock ticks after boot), which together name it even
/// when the id is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Start time, `/proc/<pid>/stat` field 22.
    pub start: u64,
}

/// The process listening on `address` (`host:port`); `None` when none is found or `/proc`
/// cannot tell (no permission to read other processes' descriptors).
pub fn listener(address: &str) -> Option<Process> {
    let addr = address.to_socket_addrs().ok()?.next()?;
    let inode = listening_inode(addr)?;
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
        });
        if owns {
            return Some(Process {
                pid,
                start: start_time(pid)?,
            });
        }
    }
    None
}

/// The inode of the listening socket bound to `addr` (or to the wildcard address on its port).
fn listening_inode(addr: SocketAddr) -> Option<u64> {
    let table = match addr {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" {
            return None;
        }
        let (ip, port) = local.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let ip = parse_ip(ip)?;
        (port == addr.port() && (ip == addr.ip() || ip.is_unspecified()))
            .then(|| inode.parse().ok())?
    })
}

/// An address as `/proc/net/tcp*` writes it: 32-bit words in host (little-endian) order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| {
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_le_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_proc_writes_them() {
        assert_eq!(
            parse_ip("0101007F"),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)))
        );
        assert_eq!(
            parse_ip("00000000000000000000000001000000"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(parse_ip("zz"), None);
    }

    #[test]
    fn finds_this_process_listening() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let p = listener(&addr).expect("found");
        assert_eq!(p.pid, std::process::id());
        drop(l);
        assert_eq!(listener(&addr), None);
    }
}
