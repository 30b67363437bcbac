//! Binding the Unix socket: stale files removed, live sockets respected, permissions set before
//! anyone can connect.

use kms_config::{FileMode, SocketAddress};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another process accepts connections on the socket.
    #[error(
        "{0}: another process is serving on this socket; refusing to start (stop it, or choose another path)"
    )]
    InUse(PathBuf),
    /// Something that is not a socket occupies the path.
    #[error("{0}: exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// An I/O step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The path involved.
        path: String,
        /// The failure.
        source: io::Error,
    },
}

/// A bound listener; a socket file is removed when this is dropped, if it is still ours.
pub struct BoundSocket {
    listener: Option<UnixListener>,
    file: Option<(PathBuf, u64, u64)>,
}

impl BoundSocket {
    /// Takes the listener out (once).
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }

    /// Removes the socket file now (if it still is the one this process created).
    pub fn remove(&mut self) {
        if let Some((path, dev, ino)) = self.file.take()
            && let Ok(meta) = fs::symlink_metadata(&path)
            && meta.dev() == dev
            && meta.ino() == ino
        {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!(socket = %path.display(), "removed socket"),
                Err(error) => {
                    tracing::warn!(socket = %path.display(), %error, "could not remove socket")
                }
            }
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Binds `address`. A file socket gets `mode` (and owner/group if given) before it appears at
/// its final path, so no client ever sees looser permissions.
pub fn bind(
    address: &SocketAddress,
    mode: FileMode,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<BoundSocket, ListenError> {
    match address {
        SocketAddress::Abstract(name) => bind_abstract(name),
        SocketAddress::Path(path) => bind_path(path, mode, uid, gid),
    }
}

fn bind_abstract(name: &str) -> Result<BoundSocket, ListenError> {
    use std::os::linux::net::SocketAddrExt;
    let display = format!("@{name}");
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(
        io_error("invalid abstract socket name", Path::new(&display)),
    )?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&address).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ListenError::InUse(PathBuf::from(&display))
        } else {
            ListenError::Io {
                what: "bind",
                path: display.clone(),
                source,
            }
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("set_nonblocking", Path::new(&display)))?;
    let listener =
        UnixListener::from_std(listener).map_err(io_error("register", Path::new(&display)))?;
    Ok(BoundSocket {
        listener: Some(listener),
        file: None,
    })
}

fn bind_path(
    path: &Path,
    mode: FileMode,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<BoundSocket, ListenError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
    }
    clear_stale(path)?;
    // Bind under a temporary name, fix permissions, then move into place.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(io_error("bind", &temp))?;
    let prepared = (|| {
        fs::set_permissions(&temp, fs::Permissions::from_mode(mode.0))
            .map_err(io_error("chmod", &temp))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(&temp, uid, gid).map_err(io_error("chown", &temp))?;
        }
        fs::rename(&temp, path).map_err(io_error("rename socket into place", path))
    })();
    if let Err(error) = prepared {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    let meta = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
    tracing::info!(socket = %path.display(), mode = format!("{:04o}", mode.0), "listening");
    Ok(BoundSocket {
        listener: Some(listener),
        file: Some((path.to_owned(), meta.dev(), meta.ino())),
    })
}

/// Removes a socket file left by a crashed process; refuses if a live process answers on it.
fn clear_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("stat", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(io_error("remove stale socket", path))?;
            tracing::warn!(socket = %path.display(), "removed a stale socket left by an earlier process");
            Ok(())
        }
        Err(e) => Err(io_error("probe existing socket", path)(e)),
    }
}
