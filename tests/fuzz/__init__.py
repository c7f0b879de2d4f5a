"""Fuzz tests (Hypothesis): hostile command lines, JSON and YAML, through the CLI and the loader."""
