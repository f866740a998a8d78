output "namespace" {
  description = "Namespace of the RayService."
  value       = kubernetes_namespace.ossfleet.metadata[0].name
}

output "rayservice_name" {
  description = "Name of the RayService."
  value       = module.rayservice.manifest.metadata.name
}

output "service_account" {
  description = "Service account of the Ray pods (the storage module gives it the files bucket)."
  value       = kubernetes_service_account.ray.metadata[0].name
}

output "serve_ports" {
  description = "Ports of the Serve Service (and so of the load balancer's TLS listeners): serve (HTTP), serve-grpc (gRPC)."
  value       = module.rayservice.serve_ports
}
