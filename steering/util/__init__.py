"""Plumbing shared by every layer: hashing, atomic writes, checksummed caches."""
