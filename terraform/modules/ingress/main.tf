# TLS for both listeners. Ray Serve's HTTP and gRPC proxies speak plain HTTP/1.1
# and HTTP/2 (its gRPC proxy has no TLS options), so TLS terminates at an AWS
# Network Load Balancer with an ACM certificate, on the Serve Service's own ports: HTTPS on `serve`
# (8000) and gRPC over TLS on `serve-grpc` (9000, ALPN HTTP/2). KubeRay builds that Service's ports
# from the head's container ports and ignores any others, so the listeners are the proxies' port
# numbers (an NLB cannot map 443 to a Service port it does not have). The AWS Load Balancer Controller
# creates the NLB from the Serve Service's annotations (below); traffic from the NLB
# to the pods stays in the VPC.

module "lb_controller_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version; commit hashes apply to git sources.
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.46.0"

  role_name_prefix                       = "${var.name}-lbc-"
  attach_load_balancer_controller_policy = true
  oidc_providers = {
    main = {
      provider_arn               = var.oidc_provider_arn
      namespace_service_accounts = ["kube-system:aws-load-balancer-controller"]
    }
  }
  tags = var.tags
}

resource "helm_release" "lb_controller" {
  name       = "aws-load-balancer-controller"
  repository = "https://aws.github.io/eks-charts"
  chart      = "aws-load-balancer-controller"
  version    = var.lb_controller_chart_version
  namespace  = "kube-system"

  values = [yamlencode({
    clusterName = var.cluster_name
    vpcId       = var.vpc_id
    serviceAccount = {
      name        = "aws-load-balancer-controller"
      annotations = { "eks.amazonaws.com/role-arn" = module.lb_controller_irsa.iam_role_arn }
    }
    nodeSelector = { "ossfleet.io/pool" = "system" }
  })]
}

# The Service itself is the RayService's serveService (modules/rayservice): KubeRay creates it and points
# its selector at the *active* Ray cluster's Serve pods, so during a NewCluster upgrade traffic moves only
# once the new cluster's applications run. Its annotations (what the controller builds the NLB from) are
# this module's output.
locals {
  service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"                   = "external"
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"        = "ip"
    "service.beta.kubernetes.io/aws-load-balancer-scheme"                 = var.internal ? "internal" : "internet-facing"
    "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"               = var.acm_certificate_arn
    "service.beta.kubernetes.io/aws-load-balancer-ssl-ports"              = "serve,serve-grpc"
    "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy" = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    # HTTP2Optional: HTTP/1.1 to clients that offer it (curl and Go offer h2 too, and Serve's HTTP
    # proxy speaks HTTP/1.1 only), HTTP/2 to clients that offer only h2 (every gRPC client).
    "service.beta.kubernetes.io/aws-load-balancer-alpn-policy"      = "HTTP2Optional"
    "service.beta.kubernetes.io/aws-load-balancer-backend-protocol" = "tcp"
    # A target is healthy when its Serve proxy answers, not when its port merely accepts.
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol" = "HTTP"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"     = "8000"
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"     = "/-/healthz"
    "service.beta.kubernetes.io/load-balancer-source-ranges"            = join(",", var.allowed_cidrs)
  }
}
