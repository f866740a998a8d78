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
  description = "Ports of the Serve Service (and so of the load balancer's TLS listeners): serve (HTTP), and serve-grpc where Serve answers gRPC (endpoints.grpc_server: serve)."
  value       = module.rayservice.serve_ports
}

output "grpc_port" {
  description = "The gRPC API's port: the gateways' Service's (endpoints.grpc_server: gateway) or the Serve Service's serve-grpc."
  value       = module.rayservice.grpc_port
}

output "grpc_on_serve_service" {
  description = "Whether gRPC is on the Serve Service (grpc_server: serve) rather than the gateways' own Service."
  value       = contains(keys(module.rayservice.serve_ports), "serve-grpc")
}

output "grpc_hostname" {
  description = "The load balancer of the gateways' gRPC Service (grpc_service of type LoadBalancer); null otherwise."
  value       = try(kubernetes_service_v1.grpc[0].status[0].load_balancer[0].ingress[0].hostname, null)
}
