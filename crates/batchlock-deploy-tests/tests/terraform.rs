//! The Terraform under `deploy/terraform/` agrees with the code.
//!
//! No Terraform binary is needed: the `.tf` files are parsed with `hcl-rs` and the parts that
//! must match the DynamoDB store are written as literals there, so these tests compare them
//! with `batchlock_dynamodb`'s constants directly. Changing a constant (a key name, the TTL
//! attribute, an IAM action) without changing the Terraform, or the other way round, fails
//! here. The example's jobs are tied together across three files: the ECS/scheduler Terraform,
//! its `batchlock.toml`, and the Dockerfile that puts that config into the image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use batchlock::config::{ConfigFile, ConflictMode, is_valid_table_name};
use batchlock::supervisor::{DEFAULT_KILL_GRACE, DEFAULT_LEASE, LeaseTiming};
use batchlock_dynamodb::{
    DOCTOR_IAM_ACTIONS, IAM_ACTIONS, KEY_ATTRIBUTE_TYPE, PARTITION_KEY, SORT_KEY, TABLE_ENV,
    TTL_ATTRIBUTE,
};
use hcl::{Block, Body, Expression, ObjectKey};

/// ECS's largest `stopTimeout` on Fargate, in seconds.
const ECS_MAX_STOP_TIMEOUT: u64 = 120;

/// What batchlock needs after the kill grace, before ECS SIGKILLs it at `stopTimeout`: waiting
/// for the process group to empty (2 s), then releasing the lock and appending the run record,
/// each bounded by the store timeout (5 s), plus slack. docs/ecs.md states the same rule.
const RELEASE_ALLOWANCE: Duration = Duration::from_secs(15);

/// The incident's schedules: job => hour in Asia/Tokyo (sitemap:refresh 06:00, xml:articles
/// 07:00, missing_images:check_articles 08:00).
const SCHEDULES: &[(&str, u32)] = &[
    ("sitemap_refresh", 6),
    ("xml_articles", 7),
    ("missing_images_check", 8),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module_dir() -> PathBuf {
    repo_root().join("deploy/terraform/modules/lock-table")
}

fn example_dir() -> PathBuf {
    repo_root().join("deploy/terraform/examples/ecs-batches")
}

/// All `*.tf` files of a directory as one body, as Terraform reads a module.
fn parse_dir(dir: &Path) -> Body {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tf files in {}", dir.display());
    let mut structures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let body = hcl::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not valid HCL: {e}", file.display()));
        structures.extend(body.into_inner());
    }
    Body(structures)
}

/// The one block `ident "label" "label" { ... }` of `body`.
fn block<'a>(body: &'a Body, ident: &str, labels: &[&str]) -> &'a Block {
    let found: Vec<&Block> = body
        .blocks()
        .filter(|b| {
            b.identifier() == ident
                && b.labels()
                    .iter()
                    .map(|l| l.as_str())
                    .eq(labels.iter().copied())
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one `{ident} {labels:?}` block"
    );
    found[0]
}

/// The blocks `ident { ... }` nested directly in `body`.
fn nested<'a>(body: &'a Body, ident: &str) -> Vec<&'a Block> {
    body.blocks().filter(|b| b.identifier() == ident).collect()
}

fn one_nested<'a>(body: &'a Body, ident: &str) -> &'a Block {
    let found = nested(body, ident);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one nested `{ident}` block"
    );
    found[0]
}

fn attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .unwrap_or_else(|| panic!("attribute `{key}` missing"))
}

/// A literal string; anything computed fails, because the tests can only compare literals.
fn literal<'a>(expr: &'a Expression, what: &str) -> &'a str {
    match expr {
        Expression::String(s) => s,
        other => panic!("{what} must be a literal string in the .tf, found `{other}`"),
    }
}

fn literal_number(expr: &Expression, what: &str) -> u64 {
    match expr {
        Expression::Number(n) => n
            .as_u64()
            .unwrap_or_else(|| panic!("{what} must be a whole number, found {n}")),
        other => panic!("{what} must be a literal number, found `{other}`"),
    }
}

/// An expression as HCL source, for comparing references such as `each.value.schedule`.
fn source(expr: &Expression) -> String {
    expr.to_string()
}

/// `expected` (HCL source) parsed and formatted the way [`source`] formats, so that layout and
/// line breaks in the .tf do not matter.
fn normalized(expected: &str) -> String {
    source(
        &expected
            .parse::<Expression>()
            .unwrap_or_else(|e| panic!("`{expected}`: {e}")),
    )
}

fn object_get<'a>(expr: &'a Expression, key: &str) -> Option<&'a Expression> {
    let Expression::Object(object) = expr else {
        panic!("expected an object, found `{expr}`");
    };
    object
        .iter()
        .find_map(|(k, v)| (key_name(k)? == key).then_some(v))
}

/// An object key written as an identifier or a literal string.
fn key_name(key: &ObjectKey) -> Option<String> {
    match key {
        ObjectKey::Identifier(id) => Some(id.as_str().to_owned()),
        ObjectKey::Expression(Expression::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn string_list(expr: &Expression, what: &str) -> Vec<String> {
    match expr {
        Expression::Array(items) => items.iter().map(|e| literal(e, what).to_owned()).collect(),
        other => panic!("{what} must be a literal list, found `{other}`"),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The module: the table and its policies.

#[test]
fn lock_table_key_schema_and_ttl_are_the_store_constants() {
    let body = parse_dir(&module_dir());
    let table = block(&body, "resource", &["aws_dynamodb_table", "locks"]).body();

    assert_eq!(
        literal(attr(table, "hash_key"), "hash_key"),
        PARTITION_KEY,
        "hash_key must be batchlock_dynamodb::PARTITION_KEY"
    );
    assert_eq!(
        literal(attr(table, "range_key"), "range_key"),
        SORT_KEY,
        "range_key must be batchlock_dynamodb::SORT_KEY"
    );
    let attributes: BTreeMap<String, String> = nested(table, "attribute")
        .into_iter()
        .map(|a| {
            (
                literal(attr(a.body(), "name"), "attribute name").to_owned(),
                literal(attr(a.body(), "type"), "attribute type").to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [PARTITION_KEY, SORT_KEY]
        .iter()
        .map(|k| ((*k).to_owned(), KEY_ATTRIBUTE_TYPE.to_owned()))
        .collect();
    assert_eq!(
        attributes, expected,
        "the table must declare exactly the two key attributes, typed {KEY_ATTRIBUTE_TYPE}"
    );
    assert!(
        nested(table, "global_secondary_index").is_empty()
            && nested(table, "local_secondary_index").is_empty(),
        "the store uses no index; one would only cost writes"
    );

    let ttl = one_nested(table, "ttl").body();
    assert_eq!(
        literal(attr(ttl, "attribute_name"), "ttl.attribute_name"),
        TTL_ATTRIBUTE,
        "the TTL attribute must be batchlock_dynamodb::TTL_ATTRIBUTE, or DynamoDB never collects old items"
    );
    assert_eq!(attr(ttl, "enabled"), &Expression::Bool(true));

    assert_eq!(
        literal(attr(table, "billing_mode"), "billing_mode"),
        "PAY_PER_REQUEST",
        "batch locks see a few writes a minute: on-demand, as `batchlock init` creates it"
    );
    let sse = one_nested(table, "server_side_encryption").body();
    assert_eq!(attr(sse, "enabled"), &Expression::Bool(true));
    let pitr = one_nested(table, "point_in_time_recovery").body();
    assert_eq!(source(attr(pitr, "enabled")), "var.point_in_time_recovery");
    assert_eq!(
        source(attr(table, "name")),
        "\"${var.name_prefix}batch-locks\""
    );
}

#[test]
fn task_policy_grants_exactly_the_actions_the_store_calls() {
    let body = parse_dir(&module_dir());
    for (name, expected) in [("task", IAM_ACTIONS), ("doctor", DOCTOR_IAM_ACTIONS)] {
        let doc = block(&body, "data", &["aws_iam_policy_document", name]).body();
        let statements = nested(doc, "statement");
        assert_eq!(statements.len(), 1, "policy `{name}`: one statement");
        let statement = statements[0].body();
        assert_eq!(literal(attr(statement, "effect"), "effect"), "Allow");
        let actions = string_list(attr(statement, "actions"), "actions");
        let unique: BTreeSet<String> = actions.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            actions.len(),
            "policy `{name}` repeats an action"
        );
        assert_eq!(
            unique,
            set(expected),
            "policy `{name}` must grant exactly the actions the store calls, no more, no less"
        );
        // The table only: no wildcard, no index ARNs (there are none), no other table.
        assert_eq!(
            source(attr(statement, "resources")),
            normalized("[aws_dynamodb_table.locks.arn]"),
            "policy `{name}`: resources"
        );
    }

    let outputs: BTreeSet<&str> = body
        .blocks()
        .filter(|b| b.identifier() == "output")
        .map(|b| b.labels()[0].as_str())
        .collect();
    for output in [
        "table_name",
        "table_arn",
        "task_policy_json",
        "doctor_policy_json",
    ] {
        assert!(outputs.contains(output), "module output `{output}` missing");
    }
    let task_policy = block(&body, "output", &["task_policy_json"]).body();
    assert_eq!(
        source(attr(task_policy, "value")),
        "data.aws_iam_policy_document.task.json"
    );
}

#[test]
fn module_inputs_are_name_prefix_retention_and_tags() {
    let body = parse_dir(&module_dir());
    let variables: BTreeSet<&str> = body
        .blocks()
        .filter(|b| b.identifier() == "variable")
        .map(|b| b.labels()[0].as_str())
        .collect();
    for input in [
        "name_prefix",
        "retention_days",
        "point_in_time_recovery",
        "tags",
    ] {
        assert!(variables.contains(input), "module input `{input}` missing");
    }
    // The prefix is validated as DynamoDB (and `batchlock`'s own check) would: a bad name fails
    // at plan time, not on the first lock.
    let prefix = block(&body, "variable", &["name_prefix"]).body();
    let validation = one_nested(prefix, "validation").body();
    assert!(
        source(attr(validation, "condition")).contains("^[A-Za-z0-9_.-]{0,244}$"),
        "name_prefix validation"
    );
    assert!(is_valid_table_name(&format!(
        "{}batch-locks",
        "x".repeat(244)
    )));
    assert!(!is_valid_table_name(&format!(
        "{}batch-locks",
        "x".repeat(245)
    )));
}

// ---------------------------------------------------------------------------------------------
// The example: three jobs, each with a config entry, a task definition and a schedule.

/// `local.jobs` of the example: job name => its object.
fn example_jobs(body: &Body) -> BTreeMap<String, Expression> {
    let locals = block(body, "locals", &[]).body();
    let Expression::Object(jobs) = attr(locals, "jobs") else {
        panic!("local.jobs must be a literal object");
    };
    jobs.iter()
        .map(|(k, v)| {
            let name = key_name(k).unwrap_or_else(|| panic!("job names must be literals: {k:?}"));
            (name, v.clone())
        })
        .collect()
}

fn example_config() -> ConfigFile {
    let path = example_dir().join("batchlock.toml");
    ConfigFile::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_job_has_a_config_entry_with_timeout_and_lock_key() {
    let body = parse_dir(&example_dir());
    let jobs = example_jobs(&body);
    let config = example_config();
    assert!(
        config.require_timeout,
        "the deployment config must set require_timeout = true"
    );
    assert!(
        config.store.is_none(),
        "the store comes from BATCH_LOCK_TABLE in the task definition, not the file"
    );
    let tf_names: BTreeSet<&String> = jobs.keys().collect();
    let config_names: BTreeSet<&String> = config.jobs.keys().collect();
    assert_eq!(
        tf_names, config_names,
        "local.jobs and batchlock.toml must name the same jobs"
    );

    let mut keys = BTreeSet::new();
    for (name, job_tf) in &jobs {
        let job = config.job(name).unwrap();
        let key = job.key.clone().expect("a lock key");
        assert!(
            config.jobs[name].key.is_some(),
            "job `{name}`: write its lock key explicitly"
        );
        assert!(
            keys.insert(key.to_string()),
            "two jobs share the key `{key}`"
        );

        let timeout = job
            .timeout
            .unwrap_or_else(|| panic!("job `{name}` has no timeout"))
            .0;
        let hour = SCHEDULES.iter().find(|(n, _)| n == name).map(|(_, h)| *h);
        let hour =
            hour.unwrap_or_else(|| panic!("job `{name}` is not one of the incident's three"));
        assert!(
            timeout < Duration::from_secs(23 * 3600),
            "job `{name}`: its timeout must end a hung run long before the next day's {hour:02}:00 run"
        );
        assert!(
            matches!(job.on_conflict, None | Some(ConflictMode::Skip)),
            "job `{name}`: a duplicate start (scheduler retry, manual run) must be skipped"
        );

        let mut timing = LeaseTiming::new(job.lease.map_or(DEFAULT_LEASE, |d| d.0));
        timing.kill_grace = job.kill_grace.map_or(DEFAULT_KILL_GRACE, |d| d.0);
        timing
            .validate()
            .unwrap_or_else(|e| panic!("job `{name}`: {e}"));

        let stop_timeout = literal_number(
            object_get(job_tf, "stop_timeout").expect("stop_timeout"),
            "stop_timeout",
        );
        assert!(
            stop_timeout <= ECS_MAX_STOP_TIMEOUT,
            "job `{name}`: ECS allows a stopTimeout of at most {ECS_MAX_STOP_TIMEOUT}s"
        );
        assert!(
            timing.kill_grace + RELEASE_ALLOWANCE <= Duration::from_secs(stop_timeout),
            "job `{name}`: kill_grace {:?} + {RELEASE_ALLOWANCE:?} to release and record must fit in stopTimeout {stop_timeout}s, or ECS kills batchlock with the lock held",
            timing.kill_grace
        );

        let rake_task = literal(
            object_get(job_tf, "rake_task").expect("rake_task"),
            "rake_task",
        );
        let configured: Vec<&str> = job
            .command
            .as_deref()
            .unwrap_or_else(|| panic!("job `{name}` has no command"))
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            configured,
            ["bundle", "exec", "rake", rake_task],
            "job `{name}`: the configured command (for manual runs) must be the scheduled one"
        );
    }
}

#[test]
fn every_job_is_scheduled_in_tokyo_time_once_a_day() {
    let body = parse_dir(&example_dir());
    let jobs = example_jobs(&body);
    for (name, hour) in SCHEDULES {
        let job = jobs
            .get(*name)
            .unwrap_or_else(|| panic!("job `{name}` missing from local.jobs"));
        let schedule = literal(object_get(job, "schedule").expect("schedule"), "schedule");
        assert_eq!(
            schedule,
            format!("cron(0 {hour} * * ? *)"),
            "job `{name}`: daily at {hour:02}:00"
        );
    }
    assert_eq!(
        jobs.len(),
        SCHEDULES.len(),
        "exactly the incident's three jobs"
    );

    let schedule = block(&body, "resource", &["aws_scheduler_schedule", "batch"]).body();
    assert_eq!(source(attr(schedule, "for_each")), "local.jobs");
    assert_eq!(
        source(attr(schedule, "schedule_expression")),
        "each.value.schedule"
    );
    assert_eq!(
        literal(
            attr(schedule, "schedule_expression_timezone"),
            "schedule_expression_timezone"
        ),
        "Asia/Tokyo"
    );
    let window = one_nested(schedule, "flexible_time_window").body();
    assert_eq!(literal(attr(window, "mode"), "mode"), "OFF");

    let target = one_nested(schedule, "target").body();
    let ecs = one_nested(target, "ecs_parameters").body();
    assert_eq!(
        source(attr(ecs, "task_definition_arn")),
        "aws_ecs_task_definition.batch[each.key].arn"
    );
    assert_eq!(literal_number(attr(ecs, "task_count"), "task_count"), 1);
    // A retry never runs beside the first run (the lock skips it), but one delivered after a
    // short first run finished would run the job again: keep them close to the scheduled time.
    let retry = one_nested(target, "retry_policy").body();
    let age = literal_number(
        attr(retry, "maximum_event_age_in_seconds"),
        "maximum_event_age_in_seconds",
    );
    assert!(
        (60..=300).contains(&age),
        "maximum_event_age_in_seconds {age}"
    );
    let attempts = literal_number(
        attr(retry, "maximum_retry_attempts"),
        "maximum_retry_attempts",
    );
    assert!(attempts <= 3, "maximum_retry_attempts {attempts}");
}

#[test]
fn task_definitions_run_the_rake_task_under_batchlock_with_the_table() {
    let body = parse_dir(&example_dir());
    let td = block(&body, "resource", &["aws_ecs_task_definition", "batch"]).body();
    assert_eq!(source(attr(td, "for_each")), "local.jobs");
    assert_eq!(source(attr(td, "task_role_arn")), "aws_iam_role.task.arn");

    let Expression::FuncCall(call) = attr(td, "container_definitions") else {
        panic!("container_definitions must be jsonencode([...])");
    };
    assert_eq!(call.name.to_string(), "jsonencode");
    let Expression::Array(containers) = &call.args[0] else {
        panic!("container_definitions must encode a list");
    };
    assert_eq!(containers.len(), 1, "one container per batch task");
    let container = &containers[0];

    let command = object_get(container, "command").expect("command");
    assert_eq!(
        source(command),
        normalized(
            r#"["batchlock", "run", each.key, "--", "bundle", "exec", "rake", each.value.rake_task]"#
        ),
        "command: batchlock run <job> -- bundle exec rake <task>"
    );

    let Expression::Array(environment) = object_get(container, "environment").expect("environment")
    else {
        panic!("environment must be a list");
    };
    let env: BTreeMap<String, String> = environment
        .iter()
        .map(|e| {
            (
                literal(object_get(e, "name").expect("name"), "environment name").to_owned(),
                source(object_get(e, "value").expect("value")),
            )
        })
        .collect();
    assert_eq!(
        env.get(TABLE_ENV).map(String::as_str),
        Some("module.lock_table.table_name"),
        "{TABLE_ENV} must name the module's table"
    );
    assert_eq!(
        env.get("BATCHLOCK_CONFIG").map(String::as_str),
        Some("local.config_path")
    );
    assert_eq!(
        source(object_get(container, "stopTimeout").expect("stopTimeout")),
        "each.value.stop_timeout"
    );

    let module = block(&body, "module", &["lock_table"]).body();
    assert_eq!(
        literal(attr(module, "source"), "module source"),
        "../../modules/lock-table"
    );
}

#[test]
fn task_role_gets_the_modules_least_privilege_policy() {
    let body = parse_dir(&example_dir());
    let policy = block(&body, "resource", &["aws_iam_role_policy", "batch_lock"]).body();
    assert_eq!(source(attr(policy, "role")), "aws_iam_role.task.id");
    assert_eq!(
        source(attr(policy, "policy")),
        "module.lock_table.task_policy_json"
    );
    // No other policy on the task role in the example: the lock table is all it needs.
    let attached_to_task = body
        .blocks()
        .filter(|b| {
            b.identifier() == "resource"
                && matches!(
                    b.labels().first().map(|l| l.as_str()),
                    Some("aws_iam_role_policy" | "aws_iam_role_policy_attachment")
                )
        })
        .filter(|b| source(attr(b.body(), "role")) == "aws_iam_role.task.id")
        .count();
    assert_eq!(attached_to_task, 1);
}

#[test]
fn the_image_carries_the_config_the_task_definitions_point_at() {
    let body = parse_dir(&example_dir());
    let locals = block(&body, "locals", &[]).body();
    let config_path = literal(attr(locals, "config_path"), "config_path");
    let dockerfile =
        std::fs::read_to_string(repo_root().join("deploy/docker/add-to-rails-image.Dockerfile"))
            .unwrap();
    assert!(
        dockerfile
            .contains("ARG BATCHLOCK_JOBS=deploy/terraform/examples/ecs-batches/batchlock.toml"),
        "the Dockerfile must default to the example's batchlock.toml"
    );
    assert!(
        dockerfile.contains(&format!("COPY ${{BATCHLOCK_JOBS}} {config_path}")),
        "the Dockerfile must copy the job config to {config_path}"
    );
    assert!(dockerfile.contains(&format!("ENV BATCHLOCK_CONFIG={config_path}")));
}

#[test]
fn the_default_table_name_is_one_batchlock_accepts() {
    let body = parse_dir(&example_dir());
    let prefix = block(&body, "variable", &["name_prefix"]).body();
    let default = literal(attr(prefix, "default"), "name_prefix default");
    assert_eq!(default, "w-rails-0930-dev-apn1-");
    let table = format!("{default}batch-locks");
    assert!(is_valid_table_name(&table), "{table}");
    assert!(
        format!("dynamodb:{table}")
            .parse::<batchlock::config::StoreLocation>()
            .is_ok()
    );
}
