output "vpc_id" {
  description = "The VPC's id."
  value       = module.vpc.vpc_id
}

output "vpc_cidr" {
  description = "The VPC's CIDR block."
  value       = module.vpc.vpc_cidr_block
}

output "private_subnets" {
  description = "Private subnet ids (nodes, Redis)."
  value       = module.vpc.private_subnets
}

output "public_subnets" {
  description = "Public subnet ids (the load balancer)."
  value       = module.vpc.public_subnets
}
