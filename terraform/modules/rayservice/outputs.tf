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
  description = "The ports of the Serve Service KubeRay builds (from the head's `serve` and `serve-*` container ports): HTTP on `serve`, gRPC on `serve-grpc`."
  value       = local.serve_ports
}

output "weights_job" {
  description = "The Job that downloads the weights into the models volume (apply it, and wait for it, before the RayService)."
  value       = local.weights_job
}
