"""The sigv4 plugin (not built yet)."""
