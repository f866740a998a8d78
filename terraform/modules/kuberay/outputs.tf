output "namespace" {
  description = "Namespace of the RayService."
  value       = kubernetes_namespace.ossfleet.metadata[0].name
}

output "rayservice_name" {
  description = "Name of the RayService."
  value       = module.rayservice.manifest.metadata.name
}
