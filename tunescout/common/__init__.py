"""What several services share: the config.json model, service settings, logging, gRPC start-up and errors."""
