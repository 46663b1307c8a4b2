# Task role: what the batches may do. Here only the lock table; in the real stack attach
# module.lock_table.task_policy_json to the existing Rails task role instead.
data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name_prefix}batch-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "batch_lock" {
  name   = "batch-lock-table"
  role   = aws_iam_role.task.id
  policy = module.lock_table.task_policy_json
}

resource "aws_ecs_task_definition" "batch" {
  for_each = local.jobs

  family                   = "${var.name_prefix}${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([
    {
      name      = "batch"
      image     = var.image
      essential = true
      # Exec form, so that batchlock is PID 1: it receives ECS's SIGTERM, forwards it to the
      # rake process group, and reaps zombies. The image's ENTRYPOINT must be empty or end in
      # `exec "$@"`.
      command = ["batchlock", "run", each.key, "--", "bundle", "exec", "rake", each.value.rake_task]
      environment = [
        { name = "BATCH_LOCK_TABLE", value = module.lock_table.table_name },
        { name = "BATCHLOCK_CONFIG", value = local.config_path },
        { name = "BATCHLOCK_LOG_FORMAT", value = "json" },
      ]
      # Seconds between ECS's SIGTERM to batchlock and its SIGKILL (default 30, Fargate max 120).
      stopTimeout = each.value.stop_timeout
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.batch.name
          awslogs-region        = var.region
          awslogs-stream-prefix = each.key
        }
      }
    }
  ])
}
