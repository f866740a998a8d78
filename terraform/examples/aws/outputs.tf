output "http_endpoint" {
  description = "OpenAI-compatible API (TLS, on the Serve Service's `serve` port): point a CNAME of the certificate's host name at this load balancer."
  value       = local.lb_hostname == null ? null : "https://${local.lb_hostname}:${module.kuberay.serve_ports["serve"]}/v1"
}

output "grpc_endpoint" {
  description = "gRPC endpoint (TLS, HTTP/2): the gateways' gRPC Service's load balancer (or the Serve Service's, where Serve answers gRPC)."
  value = (module.kuberay.grpc_on_serve_service
    ? (local.lb_hostname == null ? null : "${local.lb_hostname}:${module.kuberay.grpc_port}")
  : (module.kuberay.grpc_hostname == null ? null : "${module.kuberay.grpc_hostname}:${module.kuberay.grpc_port}"))
}

output "redis_secret_name" {
  description = "Secrets Manager secret with the Redis AUTH token and URL."
  value       = module.redis.secret_name
}

output "redis_url" {
  description = "What redis.url in the ossfleet config must say."
  value       = module.redis.url
}

output "pipeline_stages" {
  description = "Pipeline stages per replica of each model, from the catalog and the chosen GPUs."
  value       = module.sizing.stages
}

output "gpu_nodes" {
  description = "GPU node bounds per model."
  value       = { for m in keys(var.models) : m => { min = module.sizing.min_gpu_nodes[m], max = module.sizing.max_gpu_nodes[m] } }
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.cluster.cluster_name
}

output "files_bucket" {
  description = "S3 bucket of batch files and LoRA adapters (ossfleet's batch.storage_url points into it)."
  value       = module.storage.files_bucket
}

output "models_file_system_id" {
  description = "EFS file system of the checkpoints (the ossfleet-models volume): put the weights here."
  value       = module.storage.models_file_system_id
}
