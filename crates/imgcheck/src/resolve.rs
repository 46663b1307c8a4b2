//! Host name resolution: once per host per run, a bounded number at a time.
//!
//! The system resolver (`getaddrinfo`) blocks, so every lookup occupies a blocking thread. A
//! run over tens of thousands of URLs would otherwise look up the same few CDN hosts again for
//! every new connection and could start hundreds of resolver threads at once. Answers are kept
//! for the life of the [`crate::Checker`], which is one batch run; failures only for
//! [`FAILURE_TTL`], so that one transient failure (`EAI_AGAIN` during the resolver's bad
//! second) does not mark every later URL of the host `dns`. A lookup holds one of
//! [`MAX_CONCURRENT_LOOKUPS`] permits until `getaddrinfo` returns, even when the request that
//! wanted it gave up: a stuck resolver then blocks new lookups instead of piling up threads.
//! Failing lookups come back as [`ResolveError`], so the checker can tell a DNS failure from
//! a refused connection by type instead of by message.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

/// Lookups allowed in flight at once; each holds a blocking thread.
pub(crate) const MAX_CONCURRENT_LOOKUPS: usize = 8;

/// How long a failed lookup is remembered. Connections to the host that wait for the same
/// lookup share its failure; the first one after this looks the host up again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(5);

/// A host name did not resolve to any address.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host `{host}`: {reason}")]
pub struct ResolveError {
    host: String,
    reason: String,
}

type Answer = Result<Arc<[SocketAddr]>, String>;

/// One host's lookup, shared by every caller, with the time it finished.
type Slot = Arc<OnceCell<(Answer, Instant)>>;

/// The blocking lookup: `getaddrinfo` in production, a fake in tests.
type LookupFn = dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>> + Send + Sync;

fn system_lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, 0).to_socket_addrs()?.collect())
}

#[derive(Clone, Default)]
pub(crate) struct CachingResolver {
    inner: Arc<Inner>,
}

struct Inner {
    answers: Mutex<HashMap<String, Slot>>,
    lookups: Arc<Semaphore>,
    lookup: Arc<LookupFn>,
    failure_ttl: Duration,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            answers: Mutex::new(HashMap::new()),
            lookups: Arc::new(Semaphore::new(MAX_CONCURRENT_LOOKUPS)),
            lookup: Arc::new(system_lookup),
            failure_ttl: FAILURE_TTL,
        }
    }
}

impl CachingResolver {
    async fn lookup(&self, host: String) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let cell = {
            let mut answers = self.inner.answers.lock().unwrap_or_else(|e| e.into_inner());
            let cell = answers.entry(host.clone()).or_default();
            // A failure is only kept for a while: then the next caller starts a new lookup.
            if let Some((Err(_), at)) = cell.get() {
                if at.elapsed() >= self.inner.failure_ttl {
                    *cell = Arc::default();
                }
            }
            cell.clone()
        };
        // Every caller for the same host waits on one lookup instead of starting its own.
        let (answer, _) = cell
            .get_or_init(|| async {
                let answer = self.blocking_lookup(&host).await;
                (answer, Instant::now())
            })
            .await;
        answer
            .clone()
            .map_err(|reason| ResolveError { host, reason })
    }

    /// Runs the blocking lookup on a blocking thread, under a lookup permit. The permit moves
    /// into the blocking task, so it is held until the lookup returns even if this future is
    /// dropped (a cancelled request must not free a slot while its thread is still busy).
    async fn blocking_lookup(&self, host: &str) -> Answer {
        let permit = self
            .inner
            .lookups
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let lookup = self.inner.lookup.clone();
        let name = host.to_string();
        let joined = tokio::task::spawn_blocking(move || {
            let answer = lookup(&name);
            drop(permit);
            answer
        })
        .await;
        match joined {
            Ok(Ok(addrs)) if addrs.is_empty() => Err("no addresses".to_string()),
            Ok(Ok(addrs)) => Ok(addrs.into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the lookup failed: {e}")),
        }
    }
}

impl Resolve for CachingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            // reqwest replaces the port of the returned addresses with the URL's port.
            let addrs = this.lookup(name.as_str().to_string()).await?;
            let addrs: Addrs = Box::new((0..addrs.len()).map(move |i| addrs[i]));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn fake(
        lookup: impl Fn(&str) -> std::io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
        failure_ttl: Duration,
    ) -> CachingResolver {
        CachingResolver {
            inner: Arc::new(Inner {
                lookup: Arc::new(lookup),
                failure_ttl,
                ..Inner::default()
            }),
        }
    }

    #[tokio::test]
    async fn localhost_resolves_and_invalid_tld_fails() {
        let resolver = CachingResolver::default();
        assert!(
            !resolver
                .lookup("localhost".into())
                .await
                .unwrap()
                .is_empty()
        );
        let err = resolver
            .lookup("imgcheck-test.invalid".into())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("imgcheck-test.invalid"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_are_kept_and_failures_expire() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        // Fails the first time (EAI_AGAIN), answers from then on.
        let resolver = fake(
            move |_| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(std::io::Error::other(
                        "Temporary failure in name resolution",
                    ))
                } else {
                    Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
                }
            },
            Duration::from_millis(100),
        );
        let err = resolver.lookup("cdn.test".into()).await.unwrap_err();
        assert!(err.to_string().contains("Temporary failure"), "{err}");
        // Within the TTL the failure is shared, not looked up again.
        assert!(resolver.lookup("cdn.test".into()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(resolver.lookup("cdn.test".into()).await.is_ok());
        assert!(resolver.lookup("cdn.test".into()).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a success is kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_lookup_keeps_its_permit_until_getaddrinfo_returns() {
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Mutex::new(stuck);
        let resolver = fake(
            move |_| {
                // A resolver that hangs until the test lets it go.
                let _ = stuck.lock().unwrap().recv();
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
            },
            FAILURE_TTL,
        );
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            resolver.lookup("stuck.test".into()),
        )
        .await;
        assert!(gave_up.is_err(), "the lookup should still be stuck");
        let permits = &resolver.inner.lookups;
        assert_eq!(
            permits.available_permits(),
            MAX_CONCURRENT_LOOKUPS - 1,
            "the stuck thread still holds its permit"
        );
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while permits.available_permits() < MAX_CONCURRENT_LOOKUPS {
            assert!(Instant::now() < deadline, "the permit never came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
