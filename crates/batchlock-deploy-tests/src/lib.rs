//! # batchlock-deploy-tests
//!
//! Tests of the deployment kit under `deploy/`, kept in their own crate so that the library and
//! binary crates do not depend on an HCL parser. It has no code of its own:
//!
//! * `tests/terraform.rs` parses the Terraform module (`deploy/terraform/modules/lock-table`)
//!   and the ECS example (`deploy/terraform/examples/ecs-batches`) and checks them against the
//!   DynamoDB store's constants and the example's `batchlock.toml`: key schema, TTL attribute,
//!   IAM actions (no more, no less), and every job's timeout, lock key, schedule and kill grace.
//! * `tests/incident.rs` runs `deploy/incident/replay.sh`: the incident replayed end to end
//!   with a real rake project, the built `batchlock` binary and the DynamoDB test server.
#![deny(missing_docs)]
