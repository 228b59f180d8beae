"""The public edge: one HTTP gateway, a client of the services over NATS."""
