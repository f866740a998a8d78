variable "cluster_name" {
  description = "The EKS cluster (KubeRay's CRDs are applied to it with kubectl)."
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the RayService."
  type        = string
  default     = "ossfleet"
}

variable "kuberay_version" {
  description = "Helm chart version of the KubeRay operator."
  type        = string
  default     = "1.7.0" # its CRDs know upgradeStrategy and gcsFaultToleranceOptions (1.3.0+), which the RayService uses
}

variable "ray_version" {
  description = "Ray version in the image (must match the image)."
  type        = string
  default     = "2.60.0"
}

variable "image" {
  description = "Container image with ossfleet installed (Ray, CUDA torch)."
  type        = string
}

variable "serve_config_yaml" {
  description = "Ray Serve config, as `ossfleet render-serve-config --config-path-in-cluster /etc/ossfleet/config.yaml` writes it."
  type        = string
}

variable "ossfleet_config_yaml" {
  description = "The ossfleet config file (no secrets: it names environment variables for them)."
  type        = string
}

variable "redis_url" {
  description = "ossfleet's redis.url: rediss://<host>:6379/0, or rediss+cluster:// for ElastiCache in cluster mode (the redis module's url)."
  type        = string

  validation {
    condition     = can(regex("^rediss(\\+cluster)?://", var.redis_url))
    error_message = "redis_url must be a TLS URL: rediss:// or rediss+cluster://."
  }
}

variable "redis_host" {
  description = "Redis primary endpoint (TLS, port 6379) for GCS fault tolerance."
  type        = string
}

variable "redis_password" {
  description = "Redis AUTH token; stored in a Kubernetes secret, read by pods from the environment."
  type        = string
  sensitive   = true
}

variable "models_pvc" {
  description = "PersistentVolumeClaim holding the model checkpoints under /models."
  type        = string
  default     = "ossfleet-models"
}

variable "idle_timeout_seconds" {
  description = "How long an idle Ray worker pod lives before the Ray autoscaler removes it."
  type        = number
  default     = 300
}

variable "cpu_workers" {
  description = "Bounds of the CPU worker group (gateways)."
  type        = object({ min = number, max = number })
  default     = { min = 1, max = 8 }
}

variable "gpu_groups" {
  description = "One Ray worker group per model: node bounds, GPUs per pod, and CPU/memory per pod."
  type = map(object({
    min_nodes     = number
    max_nodes     = number
    gpus_per_node = number
    cpu           = string
    memory        = string
  }))
}

variable "hf_token_secret" {
  description = "A Kubernetes Secret in the namespace whose key \"token\" holds a Hugging Face token, for gated repositories (Meta's Llama, Google's Gemma, Mistral's Mixtral): the weights Job reads it as HF_TOKEN. The token never passes through Terraform. null: no token (openai/gpt-oss is not gated)."
  type        = string
  default     = null
}

variable "weights_repos" {
  description = "Hugging Face repository each model's weights come from, by model name (the weights Job downloads it); a model not listed gets openai/<its spec>."
  type        = map(string)
  default     = {}
}

variable "storage_url" {
  description = "ossfleet's file storage for batch files and adapters (the storage module's bucket URL); empty: the config file's."
  type        = string
  default     = ""
}

variable "serve_service" {
  description = "The Serve Service KubeRay keeps pointed at the active cluster: name, type and the load balancer's annotations (the ingress module's); null: KubeRay's default."
  type = object({
    name        = string
    type        = string
    annotations = map(string)
  })
  default = null
}

variable "grpc_service" {
  description = "The Service of the gateways' own gRPC API (endpoints.grpc_server: gateway): name, type and the load balancer's annotations (the ingress module's grpc_service_annotations); null: none."
  type = object({
    name        = string
    type        = string
    annotations = map(string)
  })
  default = null
}

variable "service_account" {
  description = "Kubernetes service account of the Ray pods (give it pod identity for the file storage bucket)."
  type        = string
  default     = "ossfleet-ray"
}
