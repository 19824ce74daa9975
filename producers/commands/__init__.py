"""Subcommands of `advisor`: one module per group, each with a `register(sub)`."""
