"""mailsync: an automatic Activity History for a small sales team."""

__version__ = "0.1.0"
