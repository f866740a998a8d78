variable "name" {
  description = "Prefix for every resource's name."
  type        = string
}

variable "cluster_name" {
  description = "The EKS cluster whose pods use the storage (pod identity associations, the EFS CSI driver)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the nodes: one EFS mount target in each."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to mount the file system (the nodes')."
  type        = list(string)
}

variable "namespace" {
  description = "Kubernetes namespace of the RayService (the models claim and the Ray pods' service account live there)."
  type        = string
}

variable "service_account" {
  description = "Service account of the Ray pods, given read/write access to the files bucket through EKS Pod Identity."
  type        = string
}

variable "models_pvc" {
  description = "Name of the PersistentVolumeClaim the Ray pods mount at /models."
  type        = string
  default     = "ossfleet-models"
}

variable "models_capacity" {
  description = "Capacity the models volume declares (EFS grows as it fills; Kubernetes needs a figure)."
  type        = string
  default     = "1Ti"
}

variable "tags" {
  description = "Tags on every AWS resource."
  type        = map(string)
  default     = {}
}

variable "pod_uid" {
  description = "uid the Ray pods and the weights Job run as (the image's `ray` user); the models access point acts as it."
  type        = number
  default     = 1000
}

variable "pod_gid" {
  description = "gid of the same (the image's `users` group)."
  type        = number
  default     = 100
}
