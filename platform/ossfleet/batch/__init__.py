"""Offline batch jobs in the OpenAI Batch API's format: files, job records, drivers."""
