"""NATS server configuration of production, and the generator of its accounts."""
