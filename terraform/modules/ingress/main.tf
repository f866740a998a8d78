# TLS for both APIs. Serve's HTTP ingress (HAProxy, or its Python proxy) and the gateways' own gRPC
# servers speak plain HTTP/1.1 and HTTP/2 (h2c) inside the VPC, so TLS terminates at AWS Network Load
# Balancers with an ACM certificate: HTTPS on the Serve Service's `serve` port (8000) and gRPC over TLS
# (ALPN HTTP/2) on the gateways' gRPC Service (9000; or on the Serve Service's `serve-grpc` where Serve
# answers gRPC, endpoints.grpc_server: serve). KubeRay builds the Serve Service's ports from the head's
# container ports and ignores any others, so the listeners are the ingress's port numbers (an NLB cannot
# map 443 to a Service port it does not have). The AWS Load Balancer Controller creates each NLB from its
# Service's annotations (below); traffic from the NLBs to the pods stays in the VPC.

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
