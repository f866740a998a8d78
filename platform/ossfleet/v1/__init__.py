"""ossfleet gRPC API v1: the proto and the stubs generated from it (by `make protos`)."""
