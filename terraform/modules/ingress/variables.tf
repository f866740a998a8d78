variable "name" {
  description = "Name of the deployment; prefixes every resource."
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster the load balancer controller runs in."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the load balancer."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The cluster's OIDC provider, for the controller's IAM role."
  type        = string
}

variable "acm_certificate_arn" {
  description = "ACM certificate for the endpoint's host name (TLS terminates at the NLB)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.acm_certificate_arn))
    error_message = "acm_certificate_arn must be an ACM certificate ARN (arn:aws:acm:...)."
  }
}

variable "internal" {
  description = "An internal load balancer (reachable only from the VPC and its peers)."
  type        = bool
  default     = true
}

variable "allowed_cidrs" {
  description = "Client CIDRs allowed through the load balancer."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "Give at least one valid CIDR; 0.0.0.0/0 only on purpose."
  }
}

variable "lb_controller_chart_version" {
  description = "Helm chart version of the AWS Load Balancer Controller."
  type        = string
  default     = "1.9.2"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
