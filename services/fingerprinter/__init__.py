"""The fingerprinter service: uploads in, fingerprints (stored tracks) or peaks (queries) out. CPU only."""
