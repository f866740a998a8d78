output "service_annotations" {
  description = "Annotations of the Serve Service (the RayService's serveService) from which the controller builds the NLB."
  value       = local.service_annotations
  # Whatever uses them (the RayService) waits for the controller, whose webhook admits the Service.
  depends_on = [helm_release.lb_controller]
}
