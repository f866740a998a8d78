variable "models" {
  description = "Model specs, as `ossfleet terraform-vars` writes them from the catalog: layers, bytes per layer (in the model's weight format) and per vocab matrix, the KV bytes one layer holds for a request of the model's max_context, and replica bounds."
  type = map(object({
    layers          = number
    layer_bytes     = number
    embedding_bytes = number
    # Gemma 2 ties its LM head to the embedding: one matrix on a one-stage replica (a copy on each end of a pipeline).
    tied_embeddings = optional(bool, false)
    hf_repo         = optional(string) # where the weights come from: read by the weights Job, not by sizing
    kv_layer_bytes  = number
    min_replicas    = number
    max_replicas    = number
  }))

  validation {
    condition     = length(var.models) > 0
    error_message = "Give at least one model."
  }
  validation {
    condition     = alltrue([for m in values(var.models) : m.layers >= 1 && floor(m.layers) == m.layers])
    error_message = "Every model needs a whole, positive number of layers."
  }
  validation {
    condition     = alltrue([for m in values(var.models) : m.layer_bytes > 0 && m.embedding_bytes > 0 && m.kv_layer_bytes >= 0])
    error_message = "layer_bytes and embedding_bytes must be positive, kv_layer_bytes not negative."
  }
  validation {
    condition     = alltrue([for m in values(var.models) : m.min_replicas >= 0 && m.max_replicas >= 1 && m.min_replicas <= m.max_replicas])
    error_message = "Replica bounds need 0 <= min_replicas <= max_replicas and max_replicas >= 1."
  }
}

variable "gpu" {
  description = "The GPU instance each model runs on: GPU memory in GiB and GPUs per node."
  type = map(object({
    gpu_memory_gib = number
    gpus_per_node  = number
  }))

  validation {
    condition     = alltrue([for g in values(var.gpu) : g.gpu_memory_gib >= 4 && g.gpu_memory_gib <= 1024])
    error_message = "gpu_memory_gib must lie between 4 and 1024."
  }
  validation {
    condition     = alltrue([for g in values(var.gpu) : g.gpus_per_node >= 1 && g.gpus_per_node <= 16 && floor(g.gpus_per_node) == g.gpus_per_node])
    error_message = "gpus_per_node must be a whole number between 1 and 16."
  }
}

variable "memory_utilization" {
  description = "Share of a GPU's memory the engine may use (catalog.GPU_MEMORY_UTILIZATION)."
  type        = number
  default     = 0.92

  validation {
    condition     = var.memory_utilization > 0 && var.memory_utilization <= 1
    error_message = "memory_utilization must lie in (0, 1]."
  }
}

variable "runtime_overhead_gib" {
  description = "Activations and workspace per GPU (catalog.RUNTIME_OVERHEAD_GIB)."
  type        = number
  default     = 0.75
}

variable "pods" {
  description = "Each model's Ray worker pod (CPUs, memory in GiB) and the node it runs on (vCPUs, memory in GiB), so that a pod which cannot fit its node is refused at plan time. Empty: not checked."
  type = map(object({
    cpu             = number
    memory_gib      = number
    node_vcpus      = number
    node_memory_gib = number
  }))
  default = {}
}
