# The lock table exactly as batchlock's DynamoDB store expects it (docs/dynamodb.md, and the
# constants in crates/batchlock-dynamodb/src/lib.rs). Key names, key types, the TTL attribute
# and the IAM actions are written as literals on purpose: crates/batchlock-deploy-tests
# compares them with the store's constants, so that changing one side alone fails a test.

resource "aws_dynamodb_table" "locks" {
  name         = "${var.name_prefix}batch-locks"
  billing_mode = "PAY_PER_REQUEST"

  # PARTITION_KEY and SORT_KEY, both KEY_ATTRIBUTE_TYPE. Lock items are `lock#<key>`/`lock`,
  # run items `runs#<key>`/`<ended_at_ms>#<run_id>`. No index: the store needs none.
  hash_key  = "pk"
  range_key = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  # TTL_ATTRIBUTE: epoch seconds after which DynamoDB may delete an idle lock item or an old
  # run. Garbage collection only: a lease's expiry is decided by the store's conditional
  # writes, never by TTL.
  ttl {
    attribute_name = "gc_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled                 = var.point_in_time_recovery
    recovery_period_in_days = var.point_in_time_recovery ? var.retention_days : null
  }

  # Encrypted with the AWS managed key `aws/dynamodb`. A customer managed key would need kms:*
  # grants for every task role, which the least-privilege policy below deliberately omits.
  server_side_encryption {
    enabled = true
  }

  deletion_protection_enabled = var.deletion_protection

  tags = var.tags
}

# What a job's task role needs: exactly IAM_ACTIONS, on this table only. `batchlock run`,
# `status`, `stop`, `release` and `history` call nothing else.
data "aws_iam_policy_document" "task" {
  statement {
    sid    = "BatchlockStore"
    effect = "Allow"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
      "dynamodb:Scan",
    ]
    resources = [aws_dynamodb_table.locks.arn]
  }
}

# What `batchlock doctor` needs (DOCTOR_IAM_ACTIONS): the store's actions plus the two
# read-only describes. For operators and deploy pipelines, not for the jobs.
data "aws_iam_policy_document" "doctor" {
  statement {
    sid    = "BatchlockDoctor"
    effect = "Allow"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
      "dynamodb:Scan",
    ]
    resources = [aws_dynamodb_table.locks.arn]
  }
}
