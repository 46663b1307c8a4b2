//! Who holds the lock, on ECS: the task ARN, cluster and task family from the task metadata
//! endpoint, so `batchlock status` can point an operator at the exact task.
//!
//! The host name of a Fargate task is an opaque internal address, so without these details a
//! holder record would say little. The endpoint is plain HTTP on a link-local address that the
//! ECS agent serves inside the task; we give it a short timeout because start-up must not wait
//! on it, and a missing answer only makes the holder record less detailed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The variable ECS sets in every container (platform 1.4+ on Fargate, agent 1.39+ on EC2).
pub const ECS_METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// How long to wait for the metadata endpoint (connect and answer together).
pub const ECS_METADATA_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the task metadata could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EcsMetadataError {
    /// The request failed (refused, timed out, bad URL).
    #[error("cannot read ECS task metadata from {url}: {source}")]
    Request {
        /// The URL asked.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The endpoint answered with an error status.
    #[error("ECS task metadata endpoint {url} answered HTTP {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The answer was not the task metadata JSON we expect.
    #[error("ECS task metadata from {url} is not valid JSON: {source}")]
    Json {
        /// The URL asked.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// The fields of `GET ${ECS_CONTAINER_METADATA_URI_V4}/task` we keep.
#[derive(Debug, Deserialize)]
struct TaskMetadata {
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
    #[serde(rename = "Cluster")]
    cluster: Option<String>,
    #[serde(rename = "Family")]
    family: Option<String>,
    #[serde(rename = "Revision")]
    revision: Option<String>,
}

/// Holder details of the current ECS task (`task_arn`, `cluster`, `family`, `revision`), for
/// [`batchlock::Holder::details`].
///
/// Returns an empty map when `ECS_CONTAINER_METADATA_URI_V4` is unset (not on ECS), so callers
/// can merge the result unconditionally; an error only when on ECS and the endpoint fails
/// (callers should log it and go on: the lock does not depend on these details).
pub async fn ecs_holder_details() -> Result<BTreeMap<String, String>, EcsMetadataError> {
    match std::env::var(ECS_METADATA_ENV) {
        Ok(uri) if !uri.is_empty() => ecs_holder_details_from(&uri, ECS_METADATA_TIMEOUT).await,
        _ => Ok(BTreeMap::new()),
    }
}

/// The identity of this process ([`batchlock::Holder::current`]) with the ECS task details
/// added when running on ECS. Never fails: if the metadata endpoint does not answer, the
/// holder is returned without them and a warning is logged, because a lock must not wait on
/// (or fail for) a nicety.
pub async fn ecs_holder() -> batchlock::Holder {
    let mut holder = batchlock::Holder::current();
    match ecs_holder_details().await {
        Ok(details) => holder.details.extend(details),
        Err(e) => tracing::warn!("holder record without ECS task details: {e}"),
    }
    holder
}

/// Like [`ecs_holder_details`], from the metadata base URI `base` with time limit `timeout`.
pub async fn ecs_holder_details_from(
    base: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, EcsMetadataError> {
    let url = format!("{}/task", base.trim_end_matches('/'));
    let request_error = |source| EcsMetadataError::Request {
        url: url.clone(),
        source,
    };
    // No proxy: the endpoint is link-local and an HTTP(S)_PROXY meant for the job's own
    // traffic must not capture it.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(request_error)?;
    let response = client.get(&url).send().await.map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(EcsMetadataError::Status {
            url,
            status: status.as_u16(),
        });
    }
    let body = response.bytes().await.map_err(request_error)?;
    let task: TaskMetadata =
        serde_json::from_slice(&body).map_err(|source| EcsMetadataError::Json {
            url: url.clone(),
            source,
        })?;
    let mut details = BTreeMap::new();
    for (name, value) in [
        ("task_arn", task.task_arn),
        ("cluster", task.cluster),
        ("family", task.family),
        ("revision", task.revision),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            details.insert(name.to_owned(), v);
        }
    }
    Ok(details)
}
