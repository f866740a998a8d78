variable "name" {
  description = "The EKS cluster's name."
  type        = string
}

variable "region" {
  description = "AWS region (for the cluster autoscaler)."
  type        = string
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
  default     = "9.56.0"
}

variable "cluster_autoscaler_image_tag" {
  description = "The cluster autoscaler's image tag. Its minor version must be the cluster's Kubernetes minor (the autoscaler supports only its own), which the release checks at plan time."
  type        = string
  default     = "v1.35.1"
}

variable "system_node_disk_gib" {
  description = "Root disk of the system nodes. They run the Ray head and the gateways from the CUDA image (tens of GB unpacked), so EKS's default 20 GiB is not enough."
  type        = number
  default     = 100

  validation {
    condition     = var.system_node_disk_gib >= 60
    error_message = "system_node_disk_gib must be at least 60: the ossfleet image alone unpacks to tens of GB."
  }
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
