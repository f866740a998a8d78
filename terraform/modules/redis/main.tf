# ElastiCache Redis for ossfleet's queue state (and Ray GCS fault tolerance):
# TLS in transit, encryption at rest, an AUTH token generated here and kept in
# Secrets Manager, a primary and replicas across zones with automatic failover.
# ElastiCache offers no append-only file for Redis 7; durability comes from
# Multi-AZ replication and daily snapshots (terraform/README.md notes the trade-off).

resource "random_password" "auth" {
  length  = 64
  special = false
}

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

resource "aws_kms_key" "redis" {
  description         = "${var.name} Redis at-rest and secret encryption"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
  tags                = var.tags
}

# The account administers the key; CloudWatch Logs may use it for the Redis
# log group (an encrypted log group needs this grant); ElastiCache and Secrets
# Manager use it through the account's IAM permissions.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy's "*" resource is this key alone (AWS's default key policy shape).
  #checkov:skip=CKV_AWS_356:A key policy's "*" resource is this key alone (AWS's default key policy shape).
  #checkov:skip=CKV_AWS_109:The account root administers its own key, as AWS's default key policy does.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsUse"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/ossfleet/${var.name}/*"]
    }
  }
}

resource "aws_secretsmanager_secret" "redis" {
  #checkov:skip=CKV2_AWS_57:ElastiCache AUTH rotation needs the ROTATE/SET strategy run against the cluster; the runbook rotates it with terraform (terraform/README.md), not a Lambda.
  name_prefix = "${var.name}-redis-"
  description = "ossfleet Redis AUTH token and URL"
  kms_key_id  = aws_kms_key.redis.arn
  tags        = var.tags
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id = aws_secretsmanager_secret.redis.id
  secret_string = jsonencode({
    password = random_password.auth.result
    url      = local.url
  })
}

locals {
  # Cluster mode has no primary endpoint: clients start from the configuration endpoint.
  endpoint = var.cluster_mode ? aws_elasticache_replication_group.this.configuration_endpoint_address : aws_elasticache_replication_group.this.primary_endpoint_address
  url      = "${var.cluster_mode ? "rediss+cluster" : "rediss"}://${local.endpoint}:6379/0"
}

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_security_group" "redis" {
  name_prefix = "${var.name}-redis-"
  description = "Redis from the EKS nodes only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "Redis (TLS) from the cluster's nodes"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = var.client_security_group_ids
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "redis" {
  name              = "/ossfleet/${var.name}/redis"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.redis.arn
  tags              = var.tags
}

# Queue state must never be evicted: the default policy (volatile-lru) may drop keys that carry a TTL
# (leases, streams, rate windows) under memory pressure. With noeviction Redis refuses writes instead,
# which ossfleet reports as 503 with retry advice.
resource "aws_elasticache_parameter_group" "this" {
  name        = "${var.name}-redis-noeviction${var.cluster_mode ? "-cluster" : ""}"
  family      = "redis${split(".", var.engine_version)[0]}"
  description = "ossfleet: never evict queue state"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  # Cluster mode: keys sharded over var.shards primaries (ossfleet keeps each tenant's and each model's
  # keys in one hash slot; its URL is rediss+cluster://).
  dynamic "parameter" {
    for_each = var.cluster_mode ? [1] : []
    content {
      name  = "cluster-enabled"
      value = "yes"
    }
  }

  tags = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = "${var.name}-redis"
  description          = "ossfleet queue state for ${var.name}"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = 6379

  # Cluster mode off: a primary and var.replicas replicas. On: var.shards such groups.
  num_cache_clusters         = var.cluster_mode ? null : var.replicas + 1
  cluster_mode               = var.cluster_mode ? "enabled" : "disabled"
  num_node_groups            = var.cluster_mode ? var.shards : null
  replicas_per_node_group    = var.cluster_mode ? var.replicas : null
  automatic_failover_enabled = true
  multi_az_enabled           = true

  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.redis.arn
  auth_token                 = random_password.auth.result

  parameter_group_name       = aws_elasticache_parameter_group.this.name
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.redis.id]
  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = var.tags
}
