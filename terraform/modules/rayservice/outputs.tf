output "manifest" {
  description = "The RayService (apiVersion ray.io/v1), as an object: checked against KubeRay's CRD offline, applied by modules/kuberay."
  value       = local.manifest
}

output "ossfleet_config_yaml" {
  description = "The ossfleet config the pods read: the given file with redis.url set to redis_url."
  value       = local.ossfleet_config
}

output "config_sha256" {
  description = "Digest of both configs, on every pod template: a change of either rolls the cluster."
  value       = local.config_sha256
}

output "serve_ports" {
  description = "The ports of the Serve Service KubeRay builds (from the head's `serve` and `serve-*` container ports): HTTP on `serve`; gRPC on `serve-grpc` only where Serve answers it (endpoints.grpc_server: serve)."
  value       = local.serve_ports
}

output "grpc_port" {
  description = "The gRPC API's port (endpoints.grpc_port): on the gateways' Service (grpc_server: gateway) or the Serve Service's `serve-grpc`."
  value       = local.grpc_port
}

output "grpc_service" {
  description = "The gateways' gRPC Service (apiVersion v1), as an object; null where Serve answers gRPC or no grpc_service was given."
  value       = local.grpc_service
  precondition {
    condition     = local.grpc_service == null || length(local.gateway_resources) > 0
    error_message = "endpoints.grpc_server gateway needs endpoints.gateway_resources, so that every gateway runs on a CPU worker pod (the Service's targets)."
  }
}

output "weights_job" {
  description = "The Job that downloads the weights into the models volume (apply it, and wait for it, before the RayService)."
  value       = local.weights_job
}
