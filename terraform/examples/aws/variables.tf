variable "name" {
  description = "Name of this deployment; prefixes and tags every resource."
  type        = string
  default     = "ossfleet"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name))
    error_message = "name must be 3-31 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

variable "models" {
  description = "Model specs (layers, bytes per layer and per vocab matrix, KV bytes per layer at max_context) and replica bounds; models.auto.tfvars.json holds them, written by `ossfleet terraform-vars --config config/production.yaml`."
  type = map(object({
    layers          = number
    layer_bytes     = number
    embedding_bytes = number
    tied_embeddings = optional(bool, false)
    hf_repo         = optional(string)
    kv_layer_bytes  = number
    min_replicas    = number
    max_replicas    = number
  }))
}

variable "gpu_instance_types" {
  description = "GPU instance type per model (one of the types in main.tf's instance_gpus)."
  type        = map(string)
  default = {
    "gpt-oss-20b"  = "g6.xlarge"    # one 24 GB L4 per replica
    "gpt-oss-120b" = "g6e.12xlarge" # 4x 48 GB L40S: two 2-stage replicas per node
    "llama-3.1-8b" = "g6.xlarge"    # bf16 on one 24 GB L4
    "gemma-2-9b"   = "g6.xlarge"
    "mixtral-8x7b" = "g6e.12xlarge" # a 3-stage pipeline on one node's 48 GB L40S GPUs
  }

  validation {
    condition = alltrue([for t in values(var.gpu_instance_types) : contains([
      "g5.xlarge", "g5.12xlarge", "g6.xlarge", "g6e.xlarge", "g6e.12xlarge", "g6e.48xlarge",
      "p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge",
    ], t)])
    error_message = "Every gpu_instance_types value must be an instance type listed in main.tf's instance_gpus."
  }
}

variable "gpu_node_disk_gib" {
  description = "Root disk of GPU nodes (image layers and caches; weights come from the models volume)."
  type        = number
  default     = 200
}

variable "gpu_pod_resources" {
  description = "CPU and memory of a model's Ray worker pod, where the default (from its instance type: every vCPU but one, 85% of the memory) does not suit. CPUs as a number (\"6\"), memory in Gi (\"40Gi\"); a pod that cannot fit its node is refused at plan time."
  type        = map(object({ cpu = string, memory = string }))
  default     = {}

  validation {
    condition     = alltrue([for p in values(var.gpu_pod_resources) : can(tonumber(p.cpu)) && can(regex("^[0-9]+Gi$", p.memory))])
    error_message = "gpu_pod_resources: cpu is a number of CPUs (\"6\") and memory a whole number of Gi (\"40Gi\")."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version. 1.35: standard support until 2027-03-27, extended (paid) until 2028-03-27 (terraform/README.md keeps the table). A version whose extended support has ended cannot be created."
  type        = string
  default     = "1.35"

  validation {
    condition     = contains(["1.33", "1.34", "1.35"], var.kubernetes_version)
    error_message = "kubernetes_version must be one EKS still creates and this deployment was checked with: 1.33, 1.34 or 1.35 (terraform/README.md)."
  }
}

variable "vpc_cidr" {
  description = "The VPC's CIDR block."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones instead of one per zone."
  type        = bool
  default     = false
}

variable "admin_cidrs" {
  description = "CIDRs allowed to the Kubernetes API; empty keeps the API private to the VPC."
  type        = list(string)
  default     = []
}

variable "redis_node_type" {
  description = "ElastiCache node type for the queue state."
  type        = string
  default     = "cache.r7g.large"
}

variable "redis_cluster_mode" {
  description = "ElastiCache in cluster mode (queue state sharded; ossfleet's redis.url becomes rediss+cluster://, which the outputs give). Changing it replaces the Redis, and the queue state with it."
  type        = bool
  default     = false
}

variable "image" {
  description = "Container image with ossfleet, Ray and CUDA torch installed."
  type        = string
}

variable "serve_config_path" {
  description = "Path to the Serve config `ossfleet render-serve-config --config-path-in-cluster /etc/ossfleet/config.yaml` wrote."
  type        = string
}

variable "ossfleet_config_path" {
  description = "Path to the ossfleet config file (config/production.yaml, edited)."
  type        = string
}

variable "acm_certificate_arn" {
  description = "ACM certificate of the endpoint's host name; TLS for HTTP and gRPC terminates at the NLB."
  type        = string
}

variable "internal_endpoint" {
  description = "Keep the load balancer internal to the VPC (enterprise services reach it over peering/PrivateLink)."
  type        = bool
  default     = true
}

variable "client_cidrs" {
  description = "Client CIDRs allowed through the load balancer."
  type        = list(string)
}

variable "monthly_budget_usd" {
  description = "Monthly AWS cost budget of this deployment's tagged resources (0: no budget)."
  type        = number
  default     = 0

  validation {
    condition     = var.monthly_budget_usd >= 0
    error_message = "monthly_budget_usd cannot be negative."
  }
}

variable "budget_alert_thresholds_percent" {
  description = "Forecasted-spend thresholds, in percent of the budget, that send an alert."
  type        = list(number)
  default     = [80, 100]
}

variable "budget_alert_emails" {
  description = "Who receives budget alerts."
  type        = list(string)
  default     = []
}

variable "hf_token_secret" {
  description = "A Kubernetes Secret in the namespace whose key \"token\" holds a Hugging Face token, for gated repositories (Meta's Llama, Google's Gemma, Mistral's Mixtral): the weights Job reads it as HF_TOKEN. The token never passes through Terraform. null: no token (openai/gpt-oss is not gated). Create it first: kubectl -n ossfleet create secret generic hf-token --from-literal=token=hf_..."
  type        = string
  default     = null
}
