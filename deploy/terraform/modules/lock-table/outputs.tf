output "table_name" {
  description = "The table name: set it as BATCH_LOCK_TABLE in every job's environment."
  value       = aws_dynamodb_table.locks.name
}

output "table_arn" {
  description = "The table ARN."
  value       = aws_dynamodb_table.locks.arn
}

output "task_policy_json" {
  description = "Least-privilege IAM policy (JSON) for the job tasks' role: exactly the actions the store calls, on this table."
  value       = data.aws_iam_policy_document.task.json
}

output "doctor_policy_json" {
  description = "IAM policy (JSON) for operators who run `batchlock doctor` (the task policy plus DescribeTable and DescribeTimeToLive)."
  value       = data.aws_iam_policy_document.doctor.json
}
