terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.98 added point_in_time_recovery.recovery_period_in_days.
      version = ">= 5.98, < 7.0"
    }
  }
}
