"""The ratelimit plugin (not built yet)."""
