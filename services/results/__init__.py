"""The results service: recognition results kept behind unguessable tokens."""
