"""Where bytes live. Today: local files written atomically; object storage comes with the OSS work."""
