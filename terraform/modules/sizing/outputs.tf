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

output "pods_fit" {
  description = "Whether each model's pod fits its node: at most the node's vCPUs less half a vCPU and 90% of its memory, the rest being the kubelet's, the system daemonsets' and the node's reserve."
  value       = { for name, p in var.pods : name => p.cpu <= p.node_vcpus - 0.5 && p.memory_gib <= p.node_memory_gib * 0.9 }

  precondition {
    condition     = alltrue([for p in values(var.pods) : p.cpu <= p.node_vcpus - 0.5 && p.memory_gib <= p.node_memory_gib * 0.9])
    error_message = "A model's Ray worker pod does not fit its node (${jsonencode({ for k, p in var.pods : k => "${p.cpu} CPU / ${p.memory_gib} GiB on a node of ${p.node_vcpus} vCPUs / ${p.node_memory_gib} GiB" if !(p.cpu <= p.node_vcpus - 0.5 && p.memory_gib <= p.node_memory_gib * 0.9) })}): lower gpu_pod_resources or choose a larger instance type."
  }
}
