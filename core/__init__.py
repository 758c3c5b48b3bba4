"""zeroserve: a zero-config HTTPS server whose configuration is a chain of eBPF programs."""

__version__ = "0.1.0"
