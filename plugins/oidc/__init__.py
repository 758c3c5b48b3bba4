"""The oidc plugin (not built yet)."""
