//! Binding the Unix socket: one plugin per path (a lock file), stale files removed, live sockets
//! respected, permissions set before anyone can connect.
//!
//! The socket is bound inside a fresh private directory (mode 0700, created next to the final
//! path so the rename stays on one filesystem), given its mode and owner there, and only then
//! renamed into place: until the rename, no other user can even reach it, whatever the umask.
//! A process-wide umask would not do: it is shared by every thread of the running runtime.
//! Nothing in that directory can be a symlink planted by someone else, and the owner is set with
//! `lchown`, so neither step ever follows a link.

use kms_config::{FileMode, SocketAddress};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// Another process holds the socket's lock file.
    #[error(
        "{0}: another process is serving on this socket (it holds the lock file {0}.lock); refusing to start (stop it, or choose another path)"
    )]
    Locked(PathBuf),
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
    /// The flock on `<socket>.lock`, held for the life of the socket. The lock file itself is
    /// left in place: removing it would let two processes lock two different files.
    _lock: Option<File>,
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
        _lock: None,
    })
}

fn bind_path(
    path: &Path,
    mode: FileMode,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<BoundSocket, ListenError> {
    let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
            parent
        }
        None => Path::new("."),
    };
    let lock = lock_socket(path)?;
    clear_stale(path)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = private_dir(parent, &file_name)?;
    let temp = private.join("socket");
    let prepared = (|| {
        let listener = UnixListener::bind(&temp).map_err(io_error("bind", &temp))?;
        let meta = fs::symlink_metadata(&temp).map_err(io_error("stat", &temp))?;
        if !meta.file_type().is_socket() {
            return Err(ListenError::NotASocket(temp.clone()));
        }
        fs::set_permissions(&temp, fs::Permissions::from_mode(mode.0))
            .map_err(io_error("chmod", &temp))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&temp, uid, gid).map_err(io_error("chown", &temp))?;
        }
        fs::rename(&temp, path).map_err(io_error("rename socket into place", path))?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_dir(&private);
    let listener = prepared?;
    let meta = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
    tracing::info!(socket = %path.display(), mode = format!("{:04o}", mode.0), "listening");
    Ok(BoundSocket {
        listener: Some(listener),
        file: Some((path.to_owned(), meta.dev(), meta.ino())),
        _lock: Some(lock),
    })
}

/// The path of the lock file that keeps a second plugin off `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the exclusive flock on `<socket>.lock` (created 0600, never through a symlink), or
/// fails at once if another process holds it.
fn lock_socket(socket: &Path) -> Result<File, ListenError> {
    let path = lock_path(socket);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(ListenError::Locked(socket.to_owned())),
        Err(TryLockError::Error(source)) => Err(io_error("lock", &path)(source)),
    }
}

/// A new directory of mode 0700 in `parent` (created, never reused), where the socket is bound
/// and prepared out of everyone else's reach.
fn private_dir(parent: &Path, file_name: &str) -> Result<PathBuf, ListenError> {
    let mut attempt = 0u32;
    loop {
        let dir = parent.join(format!(".{file_name}.{}.{attempt}.tmp", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // The umask may only have removed bits; make sure of exactly 0700.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_error("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(io_error("create private directory", &dir)(e)),
        }
    }
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
