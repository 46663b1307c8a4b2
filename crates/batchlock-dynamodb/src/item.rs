//! Encoding of lock and run records as DynamoDB items, and the expression helpers.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use batchlock::{FencingToken, Holder, LockRecord, RunRecord};

use crate::{
    LOCK_PK_PREFIX, LOCK_SK, PARTITION_KEY, RUNS_PK_PREFIX, SORT_KEY, TTL_ATTRIBUTE, attr,
};

/// A DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Every `#name` placeholder our expressions use, and the attribute it stands for.
///
/// All attribute names go through placeholders, not only the reserved ones (`owner` is one;
/// the list has hundreds of words and can grow), so no attribute can collide with a keyword.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("#pk", PARTITION_KEY),
    ("#sk", SORT_KEY),
    ("#key", attr::KEY),
    ("#token", attr::TOKEN),
    ("#owner", attr::OWNER),
    ("#holder", attr::HOLDER),
    ("#acquired", attr::ACQUIRED_AT),
    ("#renewed", attr::RENEWED_AT),
    ("#expires", attr::EXPIRES_AT),
    ("#stop", attr::STOP_REQUESTED),
    ("#gc", TTL_ATTRIBUTE),
];

/// The `ExpressionAttributeNames` for `expressions`: exactly the placeholders they use,
/// because DynamoDB rejects a request that defines a name it does not use.
pub(crate) fn names_for(expressions: &[&str]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for expr in expressions {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'#' {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |p| i + 1 + p);
                let placeholder = &expr[i..end];
                let attribute = PLACEHOLDERS
                    .iter()
                    .find(|(p, _)| *p == placeholder)
                    .map(|(_, a)| *a)
                    .unwrap_or_else(|| panic!("unknown placeholder {placeholder} in `{expr}`"));
                names.insert(placeholder.to_owned(), attribute.to_owned());
                i = end;
            } else {
                i += 1;
            }
        }
    }
    names
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The primary key of the lock item of `key`.
pub(crate) fn lock_key(key: &str) -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            s(format!("{LOCK_PK_PREFIX}{key}")),
        ),
        (SORT_KEY.to_owned(), s(LOCK_SK)),
    ])
}

/// The partition key of the run history of `key`.
pub(crate) fn runs_pk(key: &str) -> String {
    format!("{RUNS_PK_PREFIX}{key}")
}

/// The sort key of a run: zero-padded end time first so that string order is time order.
pub(crate) fn run_sk(ended_at_ms: u64, run_id: &str) -> String {
    format!("{ended_at_ms:020}#{run_id}")
}

/// The whole run item.
pub(crate) fn run_item(run: &RunRecord, gc_at_s: u64) -> Result<Item, String> {
    let record = serde_json::to_string(run).map_err(|e| format!("cannot encode run: {e}"))?;
    Ok(HashMap::from([
        (PARTITION_KEY.to_owned(), s(runs_pk(&run.key))),
        (SORT_KEY.to_owned(), s(run_sk(run.ended_at_ms, &run.run_id))),
        (attr::KEY.to_owned(), s(run.key.clone())),
        (attr::RUN_ID.to_owned(), s(run.run_id.clone())),
        (attr::OUTCOME.to_owned(), s(run.outcome.as_str())),
        (attr::ENDED_AT.to_owned(), n(run.ended_at_ms)),
        (attr::RECORD.to_owned(), s(record)),
        (TTL_ATTRIBUTE.to_owned(), n(gc_at_s)),
    ]))
}

/// Decodes a run item.
pub(crate) fn decode_run(item: &Item) -> Result<RunRecord, String> {
    let record = get_s(item, attr::RECORD).ok_or_else(|| {
        format!(
            "run item {} has no `{}` attribute",
            describe_key(item),
            attr::RECORD
        )
    })?;
    serde_json::from_str(record)
        .map_err(|e| format!("run item {} is not a run record: {e}", describe_key(item)))
}

/// Decodes a lock item. Missing optional attributes mean "never set" (a fresh or freed lock).
pub(crate) fn decode_lock(item: &Item) -> Result<LockRecord, String> {
    let key = match get_s(item, attr::KEY) {
        Some(k) => k.to_owned(),
        None => get_s(item, PARTITION_KEY)
            .and_then(|pk| pk.strip_prefix(LOCK_PK_PREFIX))
            .ok_or_else(|| format!("lock item {} has no key", describe_key(item)))?
            .to_owned(),
    };
    let holder = match get_s(item, attr::HOLDER) {
        Some(json) => Some(
            serde_json::from_str::<Holder>(json)
                .map_err(|e| format!("lock `{key}` has an unreadable holder: {e}"))?,
        ),
        None => None,
    };
    let num = |name: &str| -> Result<u64, String> {
        match item.get(name) {
            None => Ok(0),
            Some(AttributeValue::N(v)) => v
                .parse::<u64>()
                .map_err(|_| format!("lock `{key}` has `{name}` = {v}, not a whole number")),
            Some(other) => Err(format!(
                "lock `{key}` has `{name}` = {other:?}, not a Number"
            )),
        }
    };
    Ok(LockRecord {
        token: FencingToken(num(attr::TOKEN)?),
        owner: get_s(item, attr::OWNER).map(str::to_owned),
        holder,
        acquired_at_ms: num(attr::ACQUIRED_AT)?,
        renewed_at_ms: num(attr::RENEWED_AT)?,
        expires_at_ms: num(attr::EXPIRES_AT)?,
        stop_requested: matches!(
            item.get(attr::STOP_REQUESTED),
            Some(AttributeValue::Bool(true))
        ),
        key,
    })
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn describe_key(item: &Item) -> String {
    format!(
        "{}/{}",
        get_s(item, PARTITION_KEY).unwrap_or("?"),
        get_s(item, SORT_KEY).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchlock::RunOutcome;

    #[test]
    fn names_cover_exactly_the_placeholders_used() {
        let names = names_for(&[
            "attribute_not_exists(#pk) OR #expires <= :now",
            "SET #token = if_not_exists(#token, :seed) + :one REMOVE #owner",
        ]);
        let mut keys: Vec<_> = names.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["#expires", "#owner", "#pk", "#token"]);
        assert_eq!(names["#owner"], "owner");
    }

    #[test]
    fn run_sort_keys_sort_by_time() {
        assert!(run_sk(999, "z") < run_sk(1000, "a"));
        assert_eq!(run_sk(5, "r").len(), 22);
    }

    #[test]
    fn lock_items_round_trip() {
        let mut item = lock_key("job");
        item.insert(attr::TOKEN.into(), n(7));
        item.insert(attr::OWNER.into(), s("run-1"));
        item.insert(
            attr::HOLDER.into(),
            s(serde_json::to_string(&Holder {
                host: "h".into(),
                pid: 3,
                details: [("task_arn".to_owned(), "arn:x".to_owned())].into(),
            })
            .unwrap()),
        );
        item.insert(attr::EXPIRES_AT.into(), n(1234));
        item.insert(attr::STOP_REQUESTED.into(), AttributeValue::Bool(true));
        let rec = decode_lock(&item).unwrap();
        assert_eq!(rec.key, "job", "key falls back to the partition key");
        assert_eq!(rec.token, FencingToken(7));
        assert_eq!(rec.owner.as_deref(), Some("run-1"));
        assert_eq!(rec.holder.unwrap().details["task_arn"], "arn:x");
        assert_eq!(rec.expires_at_ms, 1234);
        assert!(rec.stop_requested);

        item.insert(attr::TOKEN.into(), s("seven"));
        assert!(decode_lock(&item).unwrap_err().contains("not a Number"));
    }

    #[test]
    fn run_items_round_trip() {
        let run = RunRecord {
            key: "job".into(),
            run_id: "r1".into(),
            token: Some(FencingToken(2)),
            holder: Holder::default(),
            command: vec!["true".into()],
            started_at_ms: 1,
            ended_at_ms: 2,
            outcome: RunOutcome::Ok,
            exit_code: Some(0),
            signal: None,
            message: None,
        };
        let item = run_item(&run, 99).unwrap();
        assert_eq!(item[TTL_ATTRIBUTE], n(99));
        assert_eq!(decode_run(&item).unwrap(), run);
    }
}
