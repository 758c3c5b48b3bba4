"""Native parts: the eBPF VM and the BoringSSL binding, reached through cffi."""
