"""The transports: HTTP (OpenAI, Responses, admin, adapters, batches, console) and gRPC, over the gateway core."""
