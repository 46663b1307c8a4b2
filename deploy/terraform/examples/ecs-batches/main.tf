# The three Rails batches of terraform/dev (11-batch-ecs.tf, 17-batch-scheduler.tf), each
# wrapped in `batchlock run <job>` and holding its own lock in one DynamoDB table.
#
# The jobs' timeouts, lease and kill grace live in batchlock.toml next to this file, which the
# image carries at local.config_path (deploy/docker/add-to-rails-image.Dockerfile copies it).
# crates/batchlock-deploy-tests/tests/terraform.rs checks that every job here has a config
# entry with a timeout and a lock key, a schedule in Asia/Tokyo, and a kill grace that fits in
# the container's stopTimeout.

locals {
  config_path = "/etc/batchlock/batchlock.toml"

  # Job name (= batchlock.toml job = lock key) => how ECS and the scheduler run it.
  # stop_timeout: seconds ECS waits after SIGTERM before SIGKILLing batchlock (PID 1); it must
  # exceed the job's kill_grace so that batchlock can still release the lock and record the run
  # (docs/ecs.md). Fargate allows at most 120.
  jobs = {
    xml_articles = {
      rake_task    = "xml:articles"
      schedule     = "cron(0 7 * * ? *)"
      stop_timeout = 120
      cpu          = 512
      memory       = 1024
    }
    sitemap_refresh = {
      rake_task    = "sitemap:refresh"
      schedule     = "cron(0 6 * * ? *)"
      stop_timeout = 120
      cpu          = 256
      memory       = 512
    }
    missing_images_check = {
      rake_task    = "missing_images:check_articles"
      schedule     = "cron(0 8 * * ? *)"
      stop_timeout = 120
      cpu          = 512
      memory       = 1024
    }
  }
}

module "lock_table" {
  source = "../../modules/lock-table"

  name_prefix            = var.name_prefix
  point_in_time_recovery = true
  retention_days         = 35
  tags                   = var.tags
}

resource "aws_cloudwatch_log_group" "batch" {
  name              = "/ecs/${var.name_prefix}batch"
  retention_in_days = 30
}
