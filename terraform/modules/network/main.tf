# The VPC ossfleet runs in: private subnets for nodes and Redis across three
# zones, public subnets for the load balancer, and VPC endpoints so that image
# pulls, STS and Secrets Manager calls stay off the NAT gateway.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Zones are pinned by var.azs when set; otherwise the region's first three available zones.
  state = "available"
}

locals {
  azs = length(var.azs) > 0 ? var.azs : slice(data.aws_availability_zones.available.names, 0, 3)
}

module "vpc" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version; commit hashes apply to git sources.
  source  = "terraform-aws-modules/vpc/aws"
  version = "5.13.0"

  name = var.name
  cidr = var.cidr
  azs  = local.azs

  private_subnets = [for i, _ in local.azs : cidrsubnet(var.cidr, 4, i)]
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.cidr, 8, 48 + i)]

  enable_nat_gateway   = true
  single_nat_gateway   = var.single_nat_gateway
  enable_dns_hostnames = true
  enable_dns_support   = true

  enable_flow_log                      = true
  create_flow_log_cloudwatch_log_group = true
  create_flow_log_cloudwatch_iam_role  = true

  public_subnet_tags = {
    "kubernetes.io/role/elb" = 1
  }
  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = 1
  }
  tags = var.tags
}

resource "aws_security_group" "endpoints" {
  #checkov:skip=CKV2_AWS_5:Attached to the interface endpoints by module.endpoints (security_group_ids), which checkov does not download.
  name_prefix = "${var.name}-endpoints-"
  description = "HTTPS from inside the VPC to its interface endpoints"
  vpc_id      = module.vpc.vpc_id

  ingress {
    description = "HTTPS from the VPC"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = [var.cidr]
  }
  tags = var.tags
}

module "endpoints" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version; commit hashes apply to git sources.
  source  = "terraform-aws-modules/vpc/aws//modules/vpc-endpoints"
  version = "5.13.0"

  vpc_id             = module.vpc.vpc_id
  security_group_ids = [aws_security_group.endpoints.id]

  endpoints = merge(
    {
      s3 = {
        service         = "s3"
        service_type    = "Gateway"
        route_table_ids = module.vpc.private_route_table_ids
      }
    },
    {
      for svc in ["ecr.api", "ecr.dkr", "sts", "logs", "secretsmanager", "elasticloadbalancing"] :
      replace(svc, ".", "_") => {
        service             = svc
        private_dns_enabled = true
        subnet_ids          = module.vpc.private_subnets
      }
    },
  )
  tags = var.tags
}
