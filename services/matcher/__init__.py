"""The matcher service: owns the fingerprint shards; ingests tracks, recognises clips, caches lookups."""
