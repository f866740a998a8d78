# KubeRay and the RayService that runs ossfleet. The RayService's
# serveConfigV2 is the file `ossfleet render-serve-config` writes; the ossfleet
# YAML it points at is mounted from a ConfigMap. Ray GCS fault tolerance uses
# the same Redis as the queues (TLS + AUTH from a Kubernetes secret), and the
# Ray autoscaler is on: pending replicas and placement groups ask KubeRay for
# worker pods, which the cluster autoscaler turns into GPU nodes.

# KubeRay's CRDs, installed explicitly and again whenever kuberay_version changes: Helm installs a
# chart's CRDs on first install only and never upgrades them, so a newer operator would meet old
# CRDs (missing fields, which the API server then drops). Server-side apply of the release's own
# kustomization (every CRD of that version); needs the AWS CLI, kubectl and git where Terraform runs.
resource "terraform_data" "kuberay_crds" {
  triggers_replace = [var.kuberay_version, var.cluster_name]

  provisioner "local-exec" {
    interpreter = ["/bin/bash", "-c"]
    command     = <<-EOT
      set -euo pipefail
      kubeconfig="$(mktemp)"
      trap 'rm -f "$kubeconfig"' EXIT
      aws eks update-kubeconfig --name '${var.cluster_name}' --region '${var.region}' --kubeconfig "$kubeconfig" >/dev/null
      kubectl --kubeconfig "$kubeconfig" apply --server-side --force-conflicts \
        -k 'github.com/ray-project/kuberay/ray-operator/config/crd?ref=v${var.kuberay_version}'
    EOT
  }
}

resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_version
  namespace        = "kuberay-system"
  create_namespace = true
  skip_crds        = true # installed above, at this version

  depends_on = [terraform_data.kuberay_crds]

  values = [yamlencode({
    nodeSelector = { "ossfleet.io/pool" = "system" }
  })]
}

resource "kubernetes_namespace" "ossfleet" {
  metadata {
    name = var.namespace
  }
}

resource "kubernetes_secret" "redis" {
  metadata {
    name      = "ossfleet-redis"
    namespace = kubernetes_namespace.ossfleet.metadata[0].name
  }
  data = {
    password = var.redis_password
  }
}

resource "kubernetes_config_map" "ossfleet" {
  metadata {
    name      = "ossfleet-config"
    namespace = kubernetes_namespace.ossfleet.metadata[0].name
  }
  data = {
    "config.yaml" = module.rayservice.ossfleet_config_yaml
  }
}

resource "kubernetes_service_account" "ray" {
  metadata {
    name      = var.service_account
    namespace = kubernetes_namespace.ossfleet.metadata[0].name
  }
}

# The RayService, rendered offline by the provider-free module and checked against KubeRay's CRD there.
module "rayservice" {
  source = "../rayservice"

  namespace            = kubernetes_namespace.ossfleet.metadata[0].name
  ray_version          = var.ray_version
  image                = var.image
  serve_config_yaml    = var.serve_config_yaml
  ossfleet_config_yaml = var.ossfleet_config_yaml
  redis_url            = var.redis_url
  storage_url          = var.storage_url
  serve_service        = var.serve_service
  grpc_service         = var.grpc_service
  redis_host           = var.redis_host
  redis_secret         = kubernetes_secret.redis.metadata[0].name
  config_map           = "ossfleet-config"
  models_pvc           = var.models_pvc
  service_account      = kubernetes_service_account.ray.metadata[0].name
  idle_timeout_seconds = var.idle_timeout_seconds
  cpu_workers          = var.cpu_workers
  gpu_groups           = var.gpu_groups
  weights_repos        = var.weights_repos
  hf_token_secret      = var.hf_token_secret
}

# The weights, downloaded into the models volume before any Ray pod starts (gateway and replicas read
# tokenizers and checkpoints from /models at start, and Serve gives up on an application after 3 failed
# starts). Terraform waits for the Job to complete; a failed or timed-out Job fails the apply, which
# says so, and a re-apply runs it again (hf download skips the files already there).
resource "helm_release" "weights" {
  name          = "ossfleet-weights"
  chart         = "${path.module}/charts/weights"
  namespace     = kubernetes_namespace.ossfleet.metadata[0].name
  values        = [yamlencode({ manifest = module.rayservice.weights_job })]
  wait          = true
  wait_for_jobs = true
  timeout       = module.rayservice.weights_job.spec.activeDeadlineSeconds

  depends_on = [kubernetes_service_account.ray]
}

# Applied as a Helm release of a local chart (charts/rayservice), not a kubernetes_manifest: Helm checks
# the kind only when it applies, after the operator (and its CRDs) are installed, so a first
# `terraform apply` plans without the CRD.
resource "helm_release" "rayservice" {
  name      = "ossfleet-rayservice"
  chart     = "${path.module}/charts/rayservice"
  namespace = kubernetes_namespace.ossfleet.metadata[0].name
  values    = [yamlencode({ manifest = module.rayservice.manifest })]

  depends_on = [helm_release.kuberay_operator, kubernetes_config_map.ossfleet, helm_release.weights]
}

# The gateways' own gRPC API (endpoints.grpc_server: gateway): a Service over the pods that run a gateway,
# with the load balancer's annotations (the ingress module's grpc_service_annotations), as rendered by
# modules/rayservice (tests/terraform checks its selector and target port against the pod template).
resource "kubernetes_service_v1" "grpc" {
  count = module.rayservice.grpc_service == null ? 0 : 1

  metadata {
    name        = module.rayservice.grpc_service.metadata.name
    namespace   = module.rayservice.grpc_service.metadata.namespace
    annotations = module.rayservice.grpc_service.metadata.annotations
  }
  spec {
    type     = module.rayservice.grpc_service.spec.type
    selector = module.rayservice.grpc_service.spec.selector
    dynamic "port" {
      for_each = module.rayservice.grpc_service.spec.ports
      content {
        name         = port.value.name
        port         = port.value.port
        target_port  = port.value.targetPort
        protocol     = port.value.protocol
        app_protocol = port.value.appProtocol
      }
    }
  }
  wait_for_load_balancer = module.rayservice.grpc_service.spec.type == "LoadBalancer"

  depends_on = [helm_release.rayservice]
}
