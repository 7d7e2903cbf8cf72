"""Subcommands of the relitcam CLI, one module per job."""
