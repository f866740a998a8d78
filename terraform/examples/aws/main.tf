# A production ossfleet on AWS: VPC, EKS with a GPU node group per model sized
# from ossfleet's catalog, ElastiCache Redis (TLS), KubeRay with a RayService,
# and a TLS load balancer for HTTP and gRPC.

locals {
  tags = merge({ "app" = "ossfleet", "ossfleet.io/deployment" = var.name }, var.tags)
}

# Not an error: with admin_cidrs empty the API is private, and the apply that installs Helm releases and
# Kubernetes objects must run from inside the VPC.
check "kubernetes_api_reachable" {
  assert {
    condition     = length(var.admin_cidrs) > 0
    error_message = "admin_cidrs is empty: the Kubernetes API is private to the VPC, so the second terraform apply (Helm, kubectl) must run from inside it (a bastion or CI runner there); set admin_cidrs to your address to run it from here."
  }
}

module "network" {
  source = "../../modules/network"

  name               = var.name
  cidr               = var.vpc_cidr
  single_nat_gateway = var.single_nat_gateway
  tags               = local.tags
}

module "cluster" {
  source = "../../modules/cluster"

  name                  = var.name
  region                = var.region
  kubernetes_version    = var.kubernetes_version
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnets
  public_endpoint       = length(var.admin_cidrs) > 0
  public_endpoint_cidrs = var.admin_cidrs
  gpu_pools = {
    for model, type in var.gpu_instance_types : model => {
      instance_type = type
      gpus_per_node = local.instance_gpus[type].gpus_per_node
      min_nodes     = module.sizing.min_gpu_nodes[model]
      # Room for one replica of the new RayCluster while a NewCluster upgrade runs beside the old one
      # at its max (the RayCluster's own worker group stays at the replica maximum).
      max_nodes = module.sizing.max_gpu_nodes[model] + module.sizing.nodes_per_replica[model]
      disk_gib  = var.gpu_node_disk_gib
    }
  }
  tags = local.tags
}

module "redis" {
  source = "../../modules/redis"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnets
  client_security_group_ids = [module.cluster.node_security_group_id]
  node_type                 = var.redis_node_type
  cluster_mode              = var.redis_cluster_mode
  tags                      = local.tags
}

module "storage" {
  source = "../../modules/storage"

  name                      = var.name
  cluster_name              = module.cluster.cluster_name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnets
  client_security_group_ids = [module.cluster.node_security_group_id]
  namespace                 = module.kuberay.namespace
  service_account           = module.kuberay.service_account
  tags                      = local.tags
}

module "kuberay" {
  source = "../../modules/kuberay"

  cluster_name         = module.cluster.cluster_name
  region               = var.region
  image                = var.image
  serve_config_yaml    = file(var.serve_config_path)
  ossfleet_config_yaml = file(var.ossfleet_config_path)
  redis_url            = module.redis.url
  redis_host           = module.redis.primary_endpoint
  redis_password       = module.redis.auth_token
  models_pvc           = module.storage.models_pvc
  storage_url          = module.storage.storage_url
  # The public Service is the RayService's Serve Service: KubeRay points it at the active cluster.
  serve_service = {
    name        = "ossfleet-public"
    type        = "LoadBalancer"
    annotations = module.ingress.service_annotations
  }
  # gRPC: the gateways answer it on their own port (endpoints.grpc_server: gateway), behind a Service of
  # their own with its own load balancer.
  grpc_service = {
    name        = "ossfleet-grpc"
    type        = "LoadBalancer"
    annotations = module.ingress.grpc_service_annotations
  }
  gpu_groups = local.gpu_groups
  # Each model's repository, from the catalog (models.auto.tfvars.json): Meta's, Google's, Mistral's, OpenAI's.
  weights_repos = { for name, m in var.models : name => m.hf_repo if m.hf_repo != null }
  # Gated repositories (Llama, Gemma, Mixtral): a Secret you create in the namespace (never in Terraform).
  hf_token_secret = var.hf_token_secret
}

module "ingress" {
  source = "../../modules/ingress"

  name                = var.name
  cluster_name        = module.cluster.cluster_name
  vpc_id              = module.network.vpc_id
  oidc_provider_arn   = module.cluster.oidc_provider_arn
  acm_certificate_arn = var.acm_certificate_arn
  internal            = var.internal_endpoint
  allowed_cidrs       = var.client_cidrs
  tags                = local.tags
}

resource "aws_budgets_budget" "monthly" {
  count = var.monthly_budget_usd > 0 ? 1 : 0

  name         = "${var.name}-monthly"
  budget_type  = "COST"
  limit_amount = tostring(var.monthly_budget_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  cost_filter {
    name   = "TagKeyValue"
    values = [format("user:ossfleet.io/deployment$%s", var.name)]
  }

  dynamic "notification" {
    for_each = var.budget_alert_thresholds_percent
    content {
      comparison_operator        = "GREATER_THAN"
      threshold                  = notification.value
      threshold_type             = "PERCENTAGE"
      notification_type          = "FORECASTED"
      subscriber_email_addresses = var.budget_alert_emails
    }
  }
}

# The load balancer KubeRay's Serve Service got (read after the RayService exists; empty until then).
data "kubernetes_service" "public" {
  metadata {
    name      = "ossfleet-public"
    namespace = module.kuberay.namespace
  }
  depends_on = [module.kuberay]
}

locals {
  lb_hostname = try(data.kubernetes_service.public.status[0].load_balancer[0].ingress[0].hostname, null)
}
