"""The MLX-free contract shared by producers and workers: names, messages, Analysis, settings."""
