variable "region" {
  description = "Region of the cluster and the lock table."
  type        = string
  default     = "ap-northeast-1"
}

variable "name_prefix" {
  description = "Prefix of every name (as in terraform/dev: \"w-rails-0930-dev-apn1-\"; production has its own)."
  type        = string
  default     = "w-rails-0930-dev-apn1-"
}

variable "image" {
  description = "The Rails image with batchlock and batchlock.toml added (deploy/docker/add-to-rails-image.Dockerfile), by digest or tag."
  type        = string
}

variable "cluster_arn" {
  description = "The ECS cluster the batches run on."
  type        = string
}

variable "execution_role_arn" {
  description = "The existing task execution role (pulls the image, writes the logs)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the batch tasks."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups for the batch tasks (they need HTTPS out to DynamoDB, or a VPC endpoint)."
  type        = list(string)
}

variable "tags" {
  description = "Tags for everything created here."
  type        = map(string)
  default     = {}
}
