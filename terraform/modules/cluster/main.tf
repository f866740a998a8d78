# EKS through the community module: a CPU system node group (Ray head, the
# gateway, KubeRay, controllers) and one GPU node group per model, tainted
# nvidia.com/gpu so that only GPU pods land there, labelled with the model it
# serves. Node groups scale between the sizes the sizing module derived from
# the catalog; the cluster autoscaler adds nodes when the Ray autoscaler asks
# for pods that do not fit, including from zero.

module "eks" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version; commit hashes apply to git sources.
  source  = "terraform-aws-modules/eks/aws"
  version = "20.24.0"

  cluster_name    = var.name
  cluster_version = var.kubernetes_version

  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids

  cluster_endpoint_public_access           = var.public_endpoint
  cluster_endpoint_public_access_cidrs     = var.public_endpoint_cidrs
  enable_cluster_creator_admin_permissions = true
  enable_irsa                              = true

  # Kubernetes secrets (the Redis password) encrypted with a KMS key.
  cluster_encryption_config = { resources = ["secrets"] }
  cluster_enabled_log_types = ["api", "audit", "authenticator"]

  cluster_addons = {
    coredns                = {}
    kube-proxy             = {}
    vpc-cni                = {}
    eks-pod-identity-agent = {}
  }

  eks_managed_node_groups = merge(
    {
      system = {
        instance_types = var.system_instance_types
        min_size       = var.system_nodes.min
        max_size       = var.system_nodes.max
        desired_size   = var.system_nodes.min
        labels         = { "ossfleet.io/pool" = "system" }
        block_device_mappings = {
          root = {
            device_name = "/dev/xvda"
            ebs = {
              volume_size = var.system_node_disk_gib
              volume_type = "gp3"
              encrypted   = true
            }
          }
        }
      }
    },
    {
      for model, pool in var.gpu_pools : "gpu-${model}" => {
        ami_type       = "AL2023_x86_64_NVIDIA"
        instance_types = [pool.instance_type]
        min_size       = pool.min_nodes
        max_size       = pool.max_nodes
        desired_size   = pool.min_nodes
        labels = {
          "ossfleet.io/pool"       = "gpu"
          "ossfleet.io/model"      = model
          "nvidia.com/gpu.present" = "true"
        }
        taints = {
          gpu = {
            key    = "nvidia.com/gpu"
            value  = "true"
            effect = "NO_SCHEDULE"
          }
        }
        block_device_mappings = {
          root = {
            device_name = "/dev/xvda"
            ebs = {
              volume_size = pool.disk_gib
              volume_type = "gp3"
              encrypted   = true
            }
          }
        }
      }
    },
  )

  tags = var.tags
}

# Managed node groups do not copy labels and taints to their Auto Scaling
# groups; the cluster autoscaler reads them from these tags to scale a GPU
# group up from zero nodes.
locals {
  asg_template_tags = merge([
    for model, pool in var.gpu_pools : {
      "${model}/label-model" = { model = model, key = "k8s.io/cluster-autoscaler/node-template/label/ossfleet.io/model", value = model }
      "${model}/taint-gpu"   = { model = model, key = "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu", value = "true:NoSchedule" }
      "${model}/gpus"        = { model = model, key = "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu", value = tostring(pool.gpus_per_node) }
    }
  ]...)
}

resource "aws_autoscaling_group_tag" "gpu_template" {
  for_each = local.asg_template_tags

  autoscaling_group_name = module.eks.eks_managed_node_groups["gpu-${each.value.model}"].node_group_autoscaling_group_names[0]
  tag {
    key                 = each.value.key
    value               = each.value.value
    propagate_at_launch = false
  }
}

module "autoscaler_irsa" {
  #checkov:skip=CKV_TF_1:Registry module pinned to an exact version; commit hashes apply to git sources.
  source  = "terraform-aws-modules/iam/aws//modules/iam-role-for-service-accounts-eks"
  version = "5.46.0"

  role_name_prefix                 = "${var.name}-autoscaler-"
  attach_cluster_autoscaler_policy = true
  cluster_autoscaler_cluster_names = [module.eks.cluster_name]
  oidc_providers = {
    main = {
      provider_arn               = module.eks.oidc_provider_arn
      namespace_service_accounts = ["kube-system:cluster-autoscaler"]
    }
  }
  tags = var.tags
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  namespace  = "kube-system"
  # Installed once the node groups exist (its pod needs a system node), with time for the first nodes.
  timeout    = 900
  depends_on = [module.eks]

  lifecycle {
    precondition {
      condition     = startswith(var.cluster_autoscaler_image_tag, "v${var.kubernetes_version}.")
      error_message = "cluster_autoscaler_image_tag ${var.cluster_autoscaler_image_tag} does not match Kubernetes ${var.kubernetes_version}: the autoscaler supports only its own minor version."
    }
  }

  values = [yamlencode({
    autoDiscovery = { clusterName = module.eks.cluster_name }
    image         = { tag = var.cluster_autoscaler_image_tag }
    awsRegion     = var.region
    rbac = {
      serviceAccount = {
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = module.autoscaler_irsa.iam_role_arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups" = true
      "skip-nodes-with-system-pods" = false
      "scale-down-unneeded-time"    = var.scale_down_unneeded
      "expander"                    = "least-waste"
    }
    nodeSelector = { "ossfleet.io/pool" = "system" }
  })]
}

resource "helm_release" "nvidia_device_plugin" {
  name             = "nvidia-device-plugin"
  repository       = "https://nvidia.github.io/k8s-device-plugin"
  chart            = "nvidia-device-plugin"
  version          = var.nvidia_device_plugin_chart_version
  namespace        = "nvidia-device-plugin"
  create_namespace = true

  values = [yamlencode({
    nodeSelector = { "nvidia.com/gpu.present" = "true" }
    tolerations  = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
  })]
}
