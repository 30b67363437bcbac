//! Worker threads for blocking PKCS#11 calls, at most `max_sessions` at once.

use super::worker_failed;
use crate::KeyStoreError;
use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Runs blocking token work on worker threads, at most as many at once as there are sessions.
pub struct Workers {
    permits: Arc<Semaphore>,
}

impl Workers {
    /// At most `max_sessions` calls at once.
    pub fn new(max_sessions: NonZeroUsize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_sessions.get())),
        }
    }

    /// Runs `work` on a worker thread once a session is free.
    pub async fn run<T, E>(
        &self,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<KeyStoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| E::from(KeyStoreError::transient("PKCS#11 session pool closed")))?;
        blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }
}

/// Runs `work` on a worker thread (opening a token, creating keys), outside the pool.
pub async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<KeyStoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| E::from(worker_failed(e)))?
}
