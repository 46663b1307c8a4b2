variable "name_prefix" {
  description = "Prefix of every name, e.g. \"w-rails-0930-dev-apn1-\". The table is \"<prefix>batch-locks\"."
  type        = string

  validation {
    # DynamoDB table names: 3-255 characters of letters, digits, `_`, `-` and `.`; the
    # suffix "batch-locks" adds 11, so the prefix may be empty and at most 244 long.
    condition     = can(regex("^[A-Za-z0-9_.-]{0,244}$", var.name_prefix))
    error_message = "name_prefix may only contain letters, digits, `_`, `-` and `.` (at most 244 characters): DynamoDB refuses any other table name."
  }
}

variable "point_in_time_recovery" {
  description = "Keep continuous backups of the table (PITR). The table holds locks and run history only, so a restore is rarely needed; it is on by default for production."
  type        = bool
  default     = true
}

variable "retention_days" {
  description = "How many days of point-in-time backups to keep (1-35) when point_in_time_recovery is on. Run history itself is kept for the store's own retention (30 days, enforced by TTL on gc_at), independent of this."
  type        = number
  default     = 35

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 35 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days from 1 to 35 (DynamoDB's PITR limits)."
  }
}

variable "deletion_protection" {
  description = "Refuse DeleteTable while true. Deleting the table frees every held lock at once."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for the table."
  type        = map(string)
  default     = {}
}
