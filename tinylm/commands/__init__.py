"""Sub-commands of the `tinylm` CLI (see tinylm/cli.py)."""
