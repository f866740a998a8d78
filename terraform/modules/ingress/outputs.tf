output "hostname" {
  description = "The load balancer's DNS name (point your host name's CNAME at it)."
  value       = try(kubernetes_service.public.status[0].load_balancer[0].ingress[0].hostname, null)
}
