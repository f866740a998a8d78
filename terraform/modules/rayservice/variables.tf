variable "name" {
  description = "Name of the RayService."
  type        = string
  default     = "ossfleet"
}

variable "namespace" {
  description = "Kubernetes namespace of the RayService."
  type        = string
}

variable "ray_version" {
  description = "Ray version in the image (must match the image)."
  type        = string
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
  description = "The ossfleet config file (no secrets: it names environment variables for them); its redis.url is replaced by redis_url."
  type        = string
}

variable "redis_url" {
  description = "The Redis the pods use for queue state (rediss://host:6379/0 on ElastiCache)."
  type        = string
}

variable "storage_url" {
  description = "ossfleet's file storage (batch files, LoRA adapters), e.g. s3://bucket/files; empty: the config file's batch.storage_url."
  type        = string
  default     = ""
}

variable "redis_host" {
  description = "Redis primary endpoint (TLS, port 6379) for GCS fault tolerance."
  type        = string
}

variable "redis_secret" {
  description = "Kubernetes secret holding the Redis AUTH token under the key `password`."
  type        = string
  default     = "ossfleet-redis"
}

variable "config_map" {
  description = "ConfigMap holding the rendered ossfleet config as config.yaml (mounted at /etc/ossfleet)."
  type        = string
  default     = "ossfleet-config"
}

variable "models_pvc" {
  description = "PersistentVolumeClaim holding the model checkpoints, mounted read-only at /models (replicas load weights, gateways read tokenizers)."
  type        = string
  default     = "ossfleet-models"
}

variable "service_account" {
  description = "Kubernetes service account of the Ray pods (its pod identity reaches the file storage bucket)."
  type        = string
  default     = "ossfleet-ray"
}

variable "serve_service" {
  description = "The Serve Service KubeRay keeps pointed at the active cluster (its ports are KubeRay's, from the head's `serve` container port, and `serve-grpc` where Serve answers gRPC): its name, type and annotations (the load balancer's); null: KubeRay's default ClusterIP service."
  type = object({
    name        = string
    type        = string
    annotations = map(string)
  })
  default = null
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

variable "weights_repos" {
  description = "Hugging Face repository each model's weights come from, by model name; a model not listed gets openai/<its spec> (openai/gpt-oss-20b, openai/gpt-oss-120b)."
  type        = map(string)
  default     = {}
}

variable "hf_token_secret" {
  description = "A Kubernetes Secret in the namespace whose key \"token\" holds a Hugging Face token, for gated repositories (Meta's Llama, Google's Gemma, Mistral's Mixtral): the weights Job reads it as HF_TOKEN. The token never passes through Terraform. null: no token (openai/gpt-oss is not gated)."
  type        = string
  default     = null
}

variable "weights_job" {
  description = "The Job that downloads every model's weights into the models volume before the RayService starts (name, and its deadline in seconds)."
  type        = object({ name = string, deadline_seconds = number })
  default     = { name = "ossfleet-weights", deadline_seconds = 7200 }
}

variable "grpc_service" {
  description = "The Service of the gateways' own gRPC API (endpoints.grpc_server: gateway, the default), over the pods that run a gateway: its name, type and annotations (the load balancer's); null: none (grpc_service output null)."
  type = object({
    name        = string
    type        = string
    annotations = map(string)
  })
  default = null
}
