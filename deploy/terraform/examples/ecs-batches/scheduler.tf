# EventBridge Scheduler: one schedule per job, wall-clock times in Asia/Tokyo.
#
# A retry (RunTask failed, e.g. no Fargate capacity) or a late delivery can never run a job
# twice *at once*: a second task finds the lock held and is skipped (on_conflict = "skip",
# exit 0, recorded in the history with the holder). The lock does not make a job run once per
# day: a retry delivered after a short first run has finished would run it again. So retries
# are few and only within 5 minutes of the scheduled time.

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name_prefix}batch-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "scheduler_run_task" {
  statement {
    sid       = "RunBatchTasks"
    actions   = ["ecs:RunTask"]
    resources = [for td in aws_ecs_task_definition.batch : td.arn]
    condition {
      test     = "ArnLike"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }

  statement {
    sid       = "PassBatchRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.task.arn, var.execution_role_arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "scheduler_run_task" {
  name   = "run-batch-tasks"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler_run_task.json
}

resource "aws_scheduler_schedule_group" "batch" {
  name = "${var.name_prefix}batch"
}

resource "aws_scheduler_schedule" "batch" {
  for_each = local.jobs

  name       = "${var.name_prefix}${each.key}"
  group_name = aws_scheduler_schedule_group.batch.name

  schedule_expression          = each.value.schedule
  schedule_expression_timezone = "Asia/Tokyo"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = var.cluster_arn
    role_arn = aws_iam_role.scheduler.arn

    ecs_parameters {
      task_definition_arn = aws_ecs_task_definition.batch[each.key].arn
      launch_type         = "FARGATE"
      task_count          = 1

      network_configuration {
        subnets          = var.subnet_ids
        security_groups  = var.security_group_ids
        assign_public_ip = false
      }
    }

    retry_policy {
      maximum_retry_attempts       = 2
      maximum_event_age_in_seconds = 300
    }
  }
}
