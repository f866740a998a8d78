"""Tenants' LoRA adapters: their records and files, the upload format, a replica's LRU of loaded ones."""
