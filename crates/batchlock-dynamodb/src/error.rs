//! Mapping of SDK failures onto [`StoreError`], with messages that say what to do next.
//!
//! The supervisor only needs to know whether to retry (`Unavailable`, `Timeout`) or to give up
//! and tell a human (`Setup`, `PermissionDenied`); the message names the table, the region
//! (through the store description) and the fix.

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use batchlock::StoreError;

/// Who failed, for messages: the store description, table, region and time limit.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub describe: String,
    pub table: String,
    pub region: String,
    pub operation_timeout: Duration,
}

/// Error codes that mean "slow down or try again": DynamoDB throttling and server faults.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "LimitExceededException",
];

/// Error codes that mean the credentials themselves were rejected.
const BAD_CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
];

/// Maps a failed SDK call of DynamoDB action `action` (such as `UpdateItem`).
pub(crate) fn map_sdk_error<E>(target: &Target, action: &str, err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let store = target.describe.clone();
    match &err {
        SdkError::TimeoutError(_) => StoreError::Timeout {
            store,
            after: target.operation_timeout,
        },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => StoreError::Timeout {
            store,
            after: target.operation_timeout,
        },
        SdkError::ServiceError(service) => {
            let e = service.err();
            map_code(
                target,
                action,
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or(""),
            )
        }
        _ => {
            let detail = DisplayErrorContext(&err).to_string();
            if mentions_credentials(&detail) {
                StoreError::PermissionDenied {
                    store,
                    message: format!(
                        "no usable AWS credentials for {action}: set AWS_PROFILE or \
                         AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an IAM role \
                         (outside AWS also set AWS_EC2_METADATA_DISABLED=true) ({detail})"
                    ),
                }
            } else {
                StoreError::Unavailable {
                    store,
                    message: format!("{action} failed: {detail}"),
                }
            }
        }
    }
}

/// Maps a DynamoDB error code (the part of the answer that is a stable API).
pub(crate) fn map_code(target: &Target, action: &str, code: &str, message: &str) -> StoreError {
    let store = target.describe.clone();
    let (table, region) = (&target.table, &target.region);
    match code {
        "ResourceNotFoundException" => StoreError::Setup {
            store,
            message: format!(
                "table `{table}` not found in {region}: run `batchlock init` to create it, or set \
                 AWS_REGION if the table lives in another region"
            ),
        },
        "AccessDeniedException" => StoreError::PermissionDenied {
            store,
            message: format!(
                "dynamodb:{action} on table `{table}` in {region} was denied: grant the actions \
                 listed in docs/dynamodb.md to this role ({message})"
            ),
        },
        c if BAD_CREDENTIAL_CODES.contains(&c) => StoreError::PermissionDenied {
            store,
            message: format!(
                "{region} rejected our credentials ({c}: {message}): refresh them or check \
                 AWS_PROFILE / AWS_ACCESS_KEY_ID and that the region is enabled for the account"
            ),
        },
        c if TRANSIENT_CODES.contains(&c) => StoreError::Unavailable {
            store,
            message: format!("{action} was throttled or failed on the server ({c}): {message}"),
        },
        "ValidationException" => StoreError::Setup {
            store,
            message: format!(
                "table `{table}` in {region} rejected {action} ({message}): its key schema may \
                 differ from pk/sk strings; run `batchlock doctor`"
            ),
        },
        c => StoreError::Unavailable {
            store,
            message: format!("{action} failed with {c}: {message}"),
        },
    }
}

fn mentions_credentials(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("credential") || lower.contains("no identity")
}

/// A call that did not finish within the store's operation timeout (plus slack).
pub(crate) fn elapsed(target: &Target) -> StoreError {
    StoreError::Timeout {
        store: target.describe.clone(),
        after: target.operation_timeout,
    }
}

/// An item we cannot read.
pub(crate) fn corrupt(target: &Target, message: String) -> StoreError {
    StoreError::Corrupt {
        store: target.describe.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            describe: "dynamodb table `locks` in ap-northeast-1".into(),
            table: "locks".into(),
            region: "ap-northeast-1".into(),
            operation_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn codes_map_to_what_the_caller_can_do() {
        let t = target();
        let missing = map_code(&t, "UpdateItem", "ResourceNotFoundException", "not found");
        assert!(matches!(missing, StoreError::Setup { .. }));
        let text = missing.to_string();
        assert!(
            text.contains("batchlock init") && text.contains("`locks`"),
            "{text}"
        );
        assert!(
            text.contains("ap-northeast-1") && !text.contains('\n'),
            "{text}"
        );

        let denied = map_code(&t, "UpdateItem", "AccessDeniedException", "no");
        assert!(matches!(denied, StoreError::PermissionDenied { .. }));
        assert!(denied.to_string().contains("dynamodb:UpdateItem"));

        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
        ] {
            assert!(map_code(&t, "GetItem", code, "").is_transient(), "{code}");
        }
        assert!(matches!(
            map_code(&t, "GetItem", "UnrecognizedClientException", "bad key"),
            StoreError::PermissionDenied { .. }
        ));
        assert!(matches!(
            map_code(&t, "GetItem", "ValidationException", "key schema"),
            StoreError::Setup { .. }
        ));
    }

    #[test]
    fn credential_failures_are_recognised() {
        assert!(mentions_credentials(
            "dispatch failure: other: the credential provider was not enabled"
        ));
        assert!(!mentions_credentials("connection refused"));
    }
}
