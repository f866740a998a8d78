# The load balancers' annotations, from plain inputs (no provider: tests/terraform evaluates this file with
# Terraform on its own).
#
# The Service itself is the RayService's serveService (modules/rayservice): KubeRay creates it and points
# its selector at the *active* Ray cluster's Serve pods, so during a NewCluster upgrade traffic moves only
# once the new cluster's applications run. Its annotations (what the controller builds the NLB from) are
# this module's output.
locals {
  nlb = {
    "service.beta.kubernetes.io/aws-load-balancer-type"                   = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"        = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"                 = var.internal ? "internal" : "internet-facing"
    "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"               = var.acm_certificate_arn
    "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy" = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    "service.beta.kubernetes.io/aws-load-balancer-backend-protocol"       = "tcp"
    "service.beta.kubernetes.io/load-balancer-source-ranges"              = join(",", var.allowed_cidrs)
  }
  service_annotations = merge(local.nlb, {
    # `serve-grpc` is a port only where Serve answers gRPC (endpoints.grpc_server: serve).
    "service.beta.kubernetes.io/aws-load-balancer-ssl-ports" = "serve,serve-grpc"
    # HTTP2Optional: HTTP/1.1 to clients that offer it (curl and Go offer h2 too, and Serve's HTTP
    # ingress speaks HTTP/1.1 to them), HTTP/2 to clients that offer only h2 (every gRPC client).
    "service.beta.kubernetes.io/aws-load-balancer-alpn-policy" = "HTTP2Optional"
    # A target is healthy when its Serve ingress answers, not when its port merely accepts.
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol" = "HTTP"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"     = "8000"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"     = "/-/healthz"
  })
  # The gateways' gRPC Service: TLS on its `grpc` port, HTTP/2 only. Its targets are the pods that run a
  # gateway, which Kubernetes lists only while the gateway's grpc.health.v1 says SERVING (the pods'
  # readiness probe); the NLB checks that the gRPC port accepts.
  grpc_service_annotations = merge(local.nlb, {
    "service.beta.kubernetes.io/aws-load-balancer-ssl-ports"            = "grpc"
    "service.beta.kubernetes.io/aws-load-balancer-alpn-policy"          = "HTTP2Only"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol" = "TCP"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"     = "traffic-port"
  })
}
