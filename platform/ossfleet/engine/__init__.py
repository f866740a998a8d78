"""The engine: turns queued requests into tokens (see ``ossfleet.engine.base``)."""
