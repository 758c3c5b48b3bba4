"""The tls_ech plugin (not built yet)."""
