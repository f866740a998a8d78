variable "name" {
  description = "The EKS cluster's name."
  type        = string
}

variable "region" {
  description = "AWS region (for the cluster autoscaler)."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.31"
}

variable "vpc_id" {
  description = "VPC to run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the control plane's ENIs and the nodes."
  type        = list(string)
}

variable "public_endpoint" {
  description = "Expose the Kubernetes API publicly (restricted to public_endpoint_cidrs)."
  type        = bool
  default     = false
}

variable "public_endpoint_cidrs" {
  description = "CIDRs allowed to reach a public Kubernetes API."
  type        = list(string)
  default     = []
}

variable "system_instance_types" {
  description = "Instance types of the CPU system node group."
  type        = list(string)
  default     = ["m6i.xlarge"]
}

variable "system_nodes" {
  description = "Size bounds of the CPU system node group."
  type        = object({ min = number, max = number })
  default     = { min = 2, max = 4 }

  validation {
    condition     = var.system_nodes.min >= 1 && var.system_nodes.min <= var.system_nodes.max
    error_message = "The system node group needs 1 <= min <= max."
  }
}

variable "gpu_pools" {
  description = "One GPU node group per model: instance type, GPUs per node, disk for weights, and node bounds from the sizing module."
  type = map(object({
    instance_type = string
    gpus_per_node = number
    min_nodes     = number
    max_nodes     = number
    disk_gib      = number
  }))

  validation {
    condition     = alltrue([for p in values(var.gpu_pools) : p.min_nodes >= 0 && p.max_nodes >= 1 && p.min_nodes <= p.max_nodes])
    error_message = "Every GPU pool needs 0 <= min_nodes <= max_nodes and max_nodes >= 1."
  }
}

variable "scale_down_unneeded" {
  description = "How long a node must be unneeded before the cluster autoscaler removes it."
  type        = string
  default     = "10m"
}

variable "cluster_autoscaler_chart_version" {
  description = "Helm chart version of the cluster autoscaler."
  type        = string
  default     = "9.43.2"
}

variable "nvidia_device_plugin_chart_version" {
  description = "Helm chart version of the NVIDIA device plugin."
  type        = string
  default     = "0.17.0"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
