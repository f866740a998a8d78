variable "name" {
  description = "Name of the deployment; prefixes every resource."
  type        = string
}

variable "cidr" {
  description = "The VPC's CIDR block."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr, 0))
    error_message = "cidr must be a valid CIDR block, such as 10.40.0.0/16."
  }
}

variable "azs" {
  description = "Availability zones to use (three); empty takes the region's first three available zones."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.azs) == 0 || length(var.azs) >= 2
    error_message = "Give at least two zones (three recommended), or none."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) rather than one per zone (survives a zone outage)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
