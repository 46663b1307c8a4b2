output "lock_table_name" {
  description = "BATCH_LOCK_TABLE for operators: `BATCH_LOCK_TABLE=<this> batchlock status`."
  value       = module.lock_table.table_name
}

output "doctor_policy_json" {
  description = "Attach to the operators' role to run `batchlock doctor` against the table."
  value       = module.lock_table.doctor_policy_json
}

output "task_definition_arns" {
  description = "Job name => task definition ARN (for `aws ecs run-task` in the runbook)."
  value       = { for name, td in aws_ecs_task_definition.batch : name => td.arn }
}
