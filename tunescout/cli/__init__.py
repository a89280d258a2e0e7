"""The `tunescout` command: `up` runs the service, `index` fills it, `recognize` asks it."""
