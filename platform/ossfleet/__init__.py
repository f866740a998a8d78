"""ossfleet: elastic, multi-tenant serving of the gpt-oss models on Ray Serve."""

__version__ = "0.1.0"
