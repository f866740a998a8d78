# Test-only: the example's provider-free slice (its variables.tf, sizing.tf and models.auto.tfvars.json are
# copied beside this file) feeding modules/rayservice the way modules/kuberay does, so that Terraform itself
# evaluates what the example passes: the tfvars into the example's variables, those into the sizing module,
# its node counts into the RayService's worker groups. The inputs modules/kuberay takes from providers
# (namespace, secret names) are fixed here.

module "rayservice" {
  source = "../../modules/rayservice"

  namespace            = "ossfleet"
  ray_version          = "2.60.0"
  image                = var.image
  serve_config_yaml    = "applications: []\n"
  ossfleet_config_yaml = file("${path.module}/production.yaml")
  redis_url            = "rediss://master.example.cache.amazonaws.com:6379/0"
  redis_host           = "master.example.cache.amazonaws.com"
  gpu_groups           = local.gpu_groups
}

output "stages" {
  value = module.sizing.stages
}

output "max_gpu_nodes" {
  value = module.sizing.max_gpu_nodes
}

output "gpu_groups" {
  value = local.gpu_groups
}

output "manifest" {
  value = module.rayservice.manifest
}
