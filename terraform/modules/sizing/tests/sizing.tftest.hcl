# The model specs come from catalog.auto.tfvars.json beside this file, which
# `ossfleet terraform-vars` writes from the catalog (a Python test checks it is
# current). Each run only picks GPUs.

run "gpt_oss_20b_fits_one_24gb_gpu" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 8 }
    }
  }
  assert {
    condition     = output.stages["gpt-oss-20b"] == 1
    error_message = "gpt-oss-20b should need one 24 GB GPU, got ${output.stages["gpt-oss-20b"]} stages."
  }
  assert {
    condition     = output.nodes_per_replica["gpt-oss-20b"] == 1
    error_message = "gpt-oss-20b should need one node per replica."
  }
}

run "gpt_oss_120b_on_80gb_is_one_gpu" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 80, gpus_per_node = 8 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 8 }
    }
  }
  assert {
    condition     = output.stages["gpt-oss-120b"] == 1
    error_message = "gpt-oss-120b should fit one 80 GB GPU, got ${output.stages["gpt-oss-120b"]} stages."
  }
  assert {
    # 4 replicas at most, 8 single-GPU replicas fit one 8-GPU node.
    condition     = output.max_gpu_nodes["gpt-oss-120b"] == 1
    error_message = "4 one-GPU replicas should pack onto one 8-GPU node, got ${output.max_gpu_nodes["gpt-oss-120b"]}."
  }
}

run "gpt_oss_120b_on_48gb_is_a_two_stage_pipeline" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 48, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 48, gpus_per_node = 1 }
    }
  }
  assert {
    condition     = output.stages["gpt-oss-120b"] == 2
    error_message = "gpt-oss-120b on 48 GB GPUs should be a 2-stage pipeline, got ${output.stages["gpt-oss-120b"]}."
  }
  assert {
    # One GPU per node: each stage on its own node, 4 replicas x 2 nodes.
    condition     = output.nodes_per_replica["gpt-oss-120b"] == 2 && output.max_gpu_nodes["gpt-oss-120b"] == 8
    error_message = "a 2-stage replica on 1-GPU nodes spans 2 nodes; 4 replicas need 8."
  }
  assert {
    condition     = output.min_gpu_nodes["gpt-oss-120b"] == 0
    error_message = "min_replicas 0 keeps no GPU node."
  }
}

run "gpt_oss_120b_on_24gb_needs_four_stages" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 4 }
      "gpt-oss-120b" = { gpu_memory_gib = 24, gpus_per_node = 4 }
    }
  }
  assert {
    condition     = output.stages["gpt-oss-120b"] == 4 && output.nodes_per_replica["gpt-oss-120b"] == 1
    error_message = "gpt-oss-120b on 24 GB GPUs should be 4 stages on one 4-GPU node."
  }
}

run "rejects_a_gpu_without_memory" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 0, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 1 }
    }
  }
  expect_failures = [var.gpu]
}

run "rejects_fractional_gpus_per_node" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 1.5 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 1 }
    }
  }
  expect_failures = [var.gpu]
}

run "rejects_inverted_replica_bounds" {
  command = plan
  variables {
    models = {
      "gpt-oss-20b" = { layers = 24, layer_bytes = 476875072, embedding_bytes = 1158266880, kv_layer_bytes = 268435456, min_replicas = 3, max_replicas = 1 }
    }
    gpu = { "gpt-oss-20b" = { gpu_memory_gib = 24, gpus_per_node = 1 } }
  }
  expect_failures = [var.models]
}

run "rejects_a_model_that_fits_no_stage_count" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 4, gpus_per_node = 1 }
    }
  }
  expect_failures = [output.stages]
}

run "deploy_pods_sized_from_a_g6_xlarge_fit" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 8 }
    }
    pods = {
      # The example's default for a g6.xlarge (4 vCPUs, 16 GiB): every vCPU but one, 85% of the memory.
      "gpt-oss-20b" = { cpu = 3, memory_gib = 13, node_vcpus = 4, node_memory_gib = 16 }
    }
  }
  assert {
    condition     = output.pods_fit["gpt-oss-20b"]
    error_message = "a 3 CPU / 13 GiB pod should fit a g6.xlarge."
  }
}

run "deploy_rejects_a_pod_larger_than_its_node" {
  command = plan
  variables {
    gpu = {
      "gpt-oss-20b"  = { gpu_memory_gib = 24, gpus_per_node = 1 }
      "gpt-oss-120b" = { gpu_memory_gib = 80, gpus_per_node = 8 }
    }
    pods = {
      # What the first version of the example asked for on a g6.xlarge: 24 GiB on a 16 GiB node.
      "gpt-oss-20b" = { cpu = 3, memory_gib = 24, node_vcpus = 4, node_memory_gib = 16 }
    }
  }
  expect_failures = [output.pods_fit]
}
