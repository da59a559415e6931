"""The precompute service."""
