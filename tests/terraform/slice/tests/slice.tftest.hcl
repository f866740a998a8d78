# The example as shipped, evaluated by Terraform (tests/terraform/test_terraform.py assembles the slice).

variables {
  image                = "registry.example/ossfleet:1"
  serve_config_path    = "serve.yaml"
  ossfleet_config_path = "production.yaml"
  acm_certificate_arn  = "arn:aws:acm:us-east-1:123456789012:certificate/example"
  client_cidrs         = ["10.0.0.0/8"]
}

run "example_defaults_plan_and_size_every_model" {
  command = apply

  assert {
    condition     = output.stages["gpt-oss-20b"] == 1 && output.stages["gpt-oss-120b"] == 2
    error_message = "g6.xlarge (24 GB) holds gpt-oss-20b on one GPU; g6e.12xlarge (48 GB) holds gpt-oss-120b in 2 stages."
  }
  assert {
    condition = alltrue([
      for g in output.manifest.spec.rayClusterConfig.workerGroupSpecs :
      g.maxReplicas == output.max_gpu_nodes[trimprefix(g.groupName, "gpu-")] if g.groupName != "cpu"
    ])
    error_message = "Every GPU worker group's maxReplicas is the sizing module's node count."
  }
  assert {
    condition     = output.gpu_groups["gpt-oss-120b"].cpu == "47" && output.gpu_groups["gpt-oss-120b"].memory == "326Gi"
    error_message = "A g6e.12xlarge pod gets every vCPU but one and 85% of 384 GiB."
  }
}

run "an_unknown_instance_type_is_refused" {
  command = plan
  variables {
    gpu_instance_types = { "gpt-oss-20b" = "g4dn.xlarge", "gpt-oss-120b" = "g6e.12xlarge" }
  }
  expect_failures = [var.gpu_instance_types]
}
