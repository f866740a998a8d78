# Pipeline stages and GPU nodes per model, computed exactly as ossfleet's
# catalog does (platform/ossfleet/catalog.py, ModelSpec.plan): the fewest
# stages on which every stage holds its weights (its layers, plus the embedding
# on the first and the LM head on the last) and the KV cache of one request of
# the model's max_context over its layers. Both grow with a stage's layers, so
# a layer costs layer_bytes + kv_layer_bytes. Layers are cut into near-equal
# runs, extra layers going to the middle stages first.
# No provider: this module runs offline, in `terraform test`.

locals {
  gib = 1073741824

  plans = {
    for name, m in var.models : name => {
      usable = var.gpu[name].gpu_memory_gib * var.memory_utilization * local.gib - var.runtime_overhead_gib * local.gib
      # Largest stage's weights and KV bytes for every stage count s = 1..layers.
      stage_bytes = [
        for s in range(1, m.layers + 1) : (
          s == 1 ? m.layers * (m.layer_bytes + m.kv_layer_bytes) + (m.tied_embeddings ? 1 : 2) * m.embedding_bytes :
          max(
            # first stage: base layers + embedding (it never gets an extra layer)
            floor(m.layers / s) * (m.layer_bytes + m.kv_layer_bytes) + m.embedding_bytes,
            # last stage: base (+1 when extras spill past the middle) + LM head
            (floor(m.layers / s) + (s == 2 ? m.layers % s : (m.layers % s > s - 2 ? 1 : 0))) * (m.layer_bytes + m.kv_layer_bytes) + m.embedding_bytes,
            # middle stages
            s >= 3 ? (floor(m.layers / s) + (m.layers % s > 0 ? 1 : 0)) * (m.layer_bytes + m.kv_layer_bytes) : 0,
          )
        )
      ]
    }
  }

  stages = {
    for name, p in local.plans : name => try(
      [for i, b in p.stage_bytes : i + 1 if b <= p.usable][0],
      null
    )
  }
}
