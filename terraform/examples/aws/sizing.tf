# What this deployment runs, computed without any provider (a slice of this file, variables.tf and
# models.auto.tfvars.json runs under `terraform test` in tests/terraform): the GPU instances, each model's
# Ray worker pod, the sizing module's node counts, and the GPU worker groups the RayService gets.

locals {
  # GPU memory (GiB), GPUs, vCPUs and memory (GiB) per node of the instance types this example knows.
  instance_types = {
    "g5.xlarge"     = { gpu_memory_gib = 24, gpus_per_node = 1, vcpus = 4, memory_gib = 16 }      # 1x A10G
    "g5.12xlarge"   = { gpu_memory_gib = 24, gpus_per_node = 4, vcpus = 48, memory_gib = 192 }    # 4x A10G
    "g6.xlarge"     = { gpu_memory_gib = 24, gpus_per_node = 1, vcpus = 4, memory_gib = 16 }      # 1x L4
    "g6e.xlarge"    = { gpu_memory_gib = 48, gpus_per_node = 1, vcpus = 4, memory_gib = 32 }      # 1x L40S
    "g6e.12xlarge"  = { gpu_memory_gib = 48, gpus_per_node = 4, vcpus = 48, memory_gib = 384 }    # 4x L40S
    "g6e.48xlarge"  = { gpu_memory_gib = 48, gpus_per_node = 8, vcpus = 192, memory_gib = 1536 }  # 8x L40S
    "p4d.24xlarge"  = { gpu_memory_gib = 40, gpus_per_node = 8, vcpus = 96, memory_gib = 1152 }   # 8x A100 40 GB
    "p4de.24xlarge" = { gpu_memory_gib = 80, gpus_per_node = 8, vcpus = 96, memory_gib = 1152 }   # 8x A100 80 GB
    "p5.48xlarge"   = { gpu_memory_gib = 80, gpus_per_node = 8, vcpus = 192, memory_gib = 2048 }  # 8x H100
    "p5e.48xlarge"  = { gpu_memory_gib = 141, gpus_per_node = 8, vcpus = 192, memory_gib = 2048 } # 8x H200
  }
  instance_gpus = {
    for type, i in local.instance_types : type => { gpu_memory_gib = i.gpu_memory_gib, gpus_per_node = i.gpus_per_node }
  }

  # One Ray worker pod per GPU node, sized from the instance: every vCPU but one and 85% of the memory
  # (the rest for the kubelet, the system daemonsets and the node's own reserve), unless
  # gpu_pod_resources sets a model's. Ray's num-cpus in the pod follows its CPU limit.
  gpu_pods = {
    for model, type in var.gpu_instance_types : model => lookup(var.gpu_pod_resources, model, {
      cpu    = tostring(local.instance_types[type].vcpus - 1)
      memory = "${floor(local.instance_types[type].memory_gib * 0.85)}Gi"
    })
  }
}

module "sizing" {
  source = "../../modules/sizing"

  models = var.models
  gpu    = { for model, type in var.gpu_instance_types : model => local.instance_gpus[type] }
  # Refused at plan time: a pod (gpu_pod_resources included) that cannot fit its node.
  pods = {
    for model, type in var.gpu_instance_types : model => {
      cpu             = tonumber(local.gpu_pods[model].cpu)
      memory_gib      = tonumber(trimsuffix(local.gpu_pods[model].memory, "Gi"))
      node_vcpus      = local.instance_types[type].vcpus
      node_memory_gib = local.instance_types[type].memory_gib
    }
  }
}


locals {
  # The RayService's GPU worker groups (modules/kuberay passes them to modules/rayservice unchanged).
  gpu_groups = {
    for model, type in var.gpu_instance_types : model => {
      min_nodes     = module.sizing.min_gpu_nodes[model]
      max_nodes     = module.sizing.max_gpu_nodes[model]
      gpus_per_node = local.instance_gpus[type].gpus_per_node
      cpu           = local.gpu_pods[model].cpu
      memory        = local.gpu_pods[model].memory
    }
  }
}
