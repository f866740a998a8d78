variable "name" {
  description = "Name of the deployment; prefixes every resource."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the Redis replication group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (one per zone) for the Redis nodes."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect (the EKS nodes')."
  type        = list(string)
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r7g.large"
}

variable "engine_version" {
  description = "Redis engine version."
  type        = string
  default     = "7.1"
}

variable "replicas" {
  description = "Read replicas besides the primary (at least one, for Multi-AZ failover)."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 5
    error_message = "Multi-AZ failover needs between 1 and 5 replicas."
  }
}

variable "cluster_mode" {
  description = "Shard the queue state over several primaries (ElastiCache cluster mode; ossfleet connects with rediss+cluster://). Changing it replaces the replication group, and with it the queue state."
  type        = bool
  default     = false
}

variable "shards" {
  description = "Primaries (node groups) in cluster mode."
  type        = number
  default     = 2

  validation {
    condition     = var.shards >= 1 && var.shards <= 500 && floor(var.shards) == var.shards
    error_message = "shards must be a whole number between 1 and 500."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
