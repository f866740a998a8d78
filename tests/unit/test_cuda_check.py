from ossfleet.engine.cuda_check import driver_problem


def test_deploy_driver_older_than_torchs_cuda_is_named_with_what_it_needs():
    # torch 2.13's default wheels are CUDA 13: driver 570 (an older AL2023 NVIDIA AMI) cannot run them.
    problem = driver_problem("13.0", "570.172.08")
    assert problem is not None and "570.172.08" in problem and "580.65.6" in problem and "CUDA 13.0" in problem
    assert driver_problem("13.0", "580.95.05") is None
    assert driver_problem("12.8", "570.172.08") is None  # a CUDA 12 build runs there
    assert driver_problem("12.8", "515.65.01") is not None
    # Unknown either side (a CPU torch, no NVML): nothing to say.
    assert driver_problem(None, "570.1") is None and driver_problem("13.0", None) is None
