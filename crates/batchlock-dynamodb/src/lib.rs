//! # batchlock-dynamodb
//!
//! The production [`batchlock::LeaseStore`]: lease locks and run history in one DynamoDB table,
//! shared by every host and container that runs a job.
//!
//! DynamoDB has no transactions we could hold while deciding, so every rule of the lease
//! protocol (`batchlock`'s `protocol.rs`) is encoded in a single **conditional write**: the
//! condition is the decision, and DynamoDB evaluates it atomically against the stored item.
//! Expiry in particular is decided only by the condition (`#expires <= :now`), never by
//! DynamoDB's TTL, which deletes expired items lazily (often days later) and is used here
//! purely for garbage collection. `docs/dynamodb.md` lists every item, key and condition.
//!
//! * [`DynamoStore::connect`] builds a client with short, explicit timeouts and bounded
//!   retries, so that no call can outlive a renewal deadline.
//! * [`init_table`] creates the table and enables TTL; [`doctor`] checks an existing setup.
//! * [`ecs_holder_details`] (or [`ecs_holder`]) identifies the running ECS task for the lock's
//!   holder record.
#![deny(missing_docs)]

mod admin;
mod config;
mod ecs;
mod error;
mod item;
mod store;

pub use admin::{Check, CheckStatus, DoctorReport, InitOutcome, checks, doctor, init_table};
pub use config::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_REGION, DEFAULT_RETENTION, DynamoConfig, TABLE_ENV,
};
pub use ecs::{
    ECS_METADATA_ENV, ECS_METADATA_TIMEOUT, EcsMetadataError, ecs_holder, ecs_holder_details,
    ecs_holder_details_from,
};
pub use store::DynamoStore;

/// The table's partition key attribute (type `S`).
pub const PARTITION_KEY: &str = "pk";
/// The table's sort key attribute (type `S`).
pub const SORT_KEY: &str = "sk";
/// The DynamoDB type of both key attributes: strings.
pub const KEY_ATTRIBUTE_TYPE: &str = "S";
/// The TTL attribute: a top-level Number in epoch **seconds** after which DynamoDB may delete
/// the item. It only collects garbage; it never decides whether a lease is free.
pub const TTL_ATTRIBUTE: &str = "gc_at";

/// Partition key prefix of lock items: `lock#<key>`.
pub const LOCK_PK_PREFIX: &str = "lock#";
/// Sort key of every lock item.
pub const LOCK_SK: &str = "lock";
/// Partition key prefix of run-history items: `runs#<key>`; their sort key is
/// `<ended_at_ms, 20 digits>#<run_id>`, so a Query returns a key's runs in time order.
pub const RUNS_PK_PREFIX: &str = "runs#";
/// Partition key of the sentinel item `doctor` writes to prove its permissions (the write's
/// condition always fails, so the item is never created).
pub const DOCTOR_SENTINEL_PK: &str = "doctor#sentinel";

/// Attribute names of the items, for tools and tests that read the table directly.
pub mod attr {
    /// The lock key, as given by the user (lock and run items).
    pub const KEY: &str = "lock_key";
    /// The last fencing token issued for a key (Number). Never decreases.
    pub const TOKEN: &str = "token";
    /// Run id of the current holder (String); absent when the lock is free.
    /// `owner` is a DynamoDB reserved word, so expressions name it `#owner`.
    pub const OWNER: &str = "owner";
    /// Holder identity as JSON: host, pid and details such as the ECS task ARN.
    pub const HOLDER: &str = "holder";
    /// When the current holder acquired the lease (Number, epoch ms).
    pub const ACQUIRED_AT: &str = "acquired_at_ms";
    /// When the holder last renewed (Number, epoch ms, holder's clock).
    pub const RENEWED_AT: &str = "renewed_at_ms";
    /// When the lease expires unless renewed (Number, epoch ms, holder's clock).
    pub const EXPIRES_AT: &str = "expires_at_ms";
    /// An operator asked the holder to stop (Boolean).
    pub const STOP_REQUESTED: &str = "stop_requested";
    /// The run id of a run item (String).
    pub const RUN_ID: &str = "run_id";
    /// The outcome of a run item (String, such as `ok`), for reading the table by eye.
    pub const OUTCOME: &str = "outcome";
    /// When a run ended (Number, epoch ms).
    pub const ENDED_AT: &str = "ended_at_ms";
    /// The whole run record as JSON (String): the source of truth for run items.
    pub const RECORD: &str = "record";
}

/// The exact IAM actions the store calls while jobs run (`batchlock run`, `status`, `stop`,
/// `release`). Grant these on the table's ARN.
///
/// The end of a run is a `TransactWriteItems`, which has no IAM action of its own: its parts
/// are authorised as `UpdateItem` and `PutItem`, so a policy must not deny those inside
/// transactions (`dynamodb:EnclosingOperation`).
pub const IAM_ACTIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:Scan",
];

/// The IAM actions [`init_table`] calls (only the operator who sets the table up needs them).
pub const INIT_IAM_ACTIONS: &[&str] = &[
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:UpdateTimeToLive",
];

/// The IAM actions [`doctor`] calls: the read-only describes plus the store's own actions,
/// which it exercises on a sentinel key (`UpdateItem` and `PutItem` also inside a
/// `TransactWriteItems`).
pub const DOCTOR_IAM_ACTIONS: &[&str] = &[
    "dynamodb:DescribeTable",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:Scan",
];
