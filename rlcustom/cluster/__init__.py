"""Cluster jobs: submit / status / logs / stop against a Ray job server, and their CLI commands."""
