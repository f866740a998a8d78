"""Autoscaling: signals, the policy, its Ray Serve adapter and a simulator."""
