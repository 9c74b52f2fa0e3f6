"""TaskPulse's WebSocket side: frame parsing, delivery rules, the consumer and its routes."""
