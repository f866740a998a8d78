output "stages" {
  description = "Pipeline stages (one GPU each) per replica of each model."
  value       = local.stages

  precondition {
    condition     = alltrue([for s in values(local.stages) : s != null])
    error_message = "A model fits its GPUs at no stage count (${jsonencode({ for k, v in local.stages : k => v == null ? "does not fit" : "fits" })}); choose GPUs with more memory."
  }
}

output "gpus_per_replica" {
  description = "GPUs one replica of each model needs."
  value       = local.stages
}

output "nodes_per_replica" {
  description = "GPU nodes one replica spans (stages packed onto nodes of gpus_per_node)."
  value       = { for name, s in local.stages : name => s == null ? null : ceil(s / var.gpu[name].gpus_per_node) }
}

output "max_gpu_nodes" {
  description = "GPU nodes each model needs at its max_replicas (the node pool's upper bound)."
  value = {
    for name, s in local.stages : name => s == null ? null : (
      var.gpu[name].gpus_per_node >= s
      ? ceil(var.models[name].max_replicas / floor(var.gpu[name].gpus_per_node / s))
      : var.models[name].max_replicas * ceil(s / var.gpu[name].gpus_per_node)
    )
  }
}

output "min_gpu_nodes" {
  description = "GPU nodes each model keeps at its min_replicas (0 when it scales to zero)."
  value = {
    for name, s in local.stages : name => s == null ? null : (
      var.gpu[name].gpus_per_node >= s
      ? ceil(var.models[name].min_replicas / floor(var.gpu[name].gpus_per_node / s))
      : var.models[name].min_replicas * ceil(s / var.gpu[name].gpus_per_node)
    )
  }
}
