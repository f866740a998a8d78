"""The control plane: the gateway's pipeline, placement, the Redis queue and its scripts, tenants, keys and money."""
