output "service_annotations" {
  description = "Annotations of the Serve Service (the RayService's serveService) from which the controller builds the NLB."
  value       = local.service_annotations
  # Whatever uses them (the RayService) waits for the controller, whose webhook admits the Service.
  depends_on = [helm_release.lb_controller]
}

output "grpc_service_annotations" {
  description = "Annotations for the gateways' gRPC Service (modules/kuberay grpc_service): the same NLB settings, TLS on its `grpc` port, HTTP/2 only, a TCP health check on that port."
  value       = local.grpc_service_annotations
  depends_on  = [helm_release.lb_controller]
}
