"""Sweeps: the Hydra callback that nests job runs under a parent run, comparison tables, local server."""
