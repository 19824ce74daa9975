"""The MLX-free contract shared by producers and workers: settings, messages, schema, tables."""
