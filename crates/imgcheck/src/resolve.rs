//! Host name resolution: once per host per run, a bounded number at a time.
//!
//! The system resolver (`getaddrinfo`) blocks, so every lookup occupies a blocking thread. A
//! run over tens of thousands of URLs would otherwise look up the same few CDN hosts again for
//! every new connection and could start hundreds of resolver threads at once. Answers (and
//! failures) are kept for the life of the [`crate::Checker`], which is one batch run. Failing
//! lookups come back as [`ResolveError`], so the checker can tell a DNS failure from a refused
//! connection by type instead of by message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::{OnceCell, Semaphore};

/// Lookups allowed in flight at once; each holds a blocking thread.
pub(crate) const MAX_CONCURRENT_LOOKUPS: usize = 8;

/// A host name did not resolve to any address.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host `{host}`: {reason}")]
pub struct ResolveError {
    host: String,
    reason: String,
}

type Answer = Result<Arc<[SocketAddr]>, String>;

#[derive(Clone, Default)]
pub(crate) struct CachingResolver {
    inner: Arc<Inner>,
}

struct Inner {
    answers: Mutex<HashMap<String, Arc<OnceCell<Answer>>>>,
    lookups: Semaphore,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            answers: Mutex::new(HashMap::new()),
            lookups: Semaphore::new(MAX_CONCURRENT_LOOKUPS),
        }
    }
}

impl CachingResolver {
    async fn lookup(&self, host: String) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let cell = {
            let mut answers = self.inner.answers.lock().unwrap_or_else(|e| e.into_inner());
            answers.entry(host.clone()).or_default().clone()
        };
        // Every caller for the same host waits on one lookup instead of starting its own.
        let answer = cell
            .get_or_init(|| async {
                let _permit = self.inner.lookups.acquire().await;
                match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(addrs) => {
                        let addrs: Arc<[SocketAddr]> = addrs.collect();
                        if addrs.is_empty() {
                            Err("no addresses".to_string())
                        } else {
                            Ok(addrs)
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        answer
            .clone()
            .map_err(|reason| ResolveError { host, reason })
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
    use super::*;

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
}
