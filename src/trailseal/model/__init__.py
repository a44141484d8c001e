"""The event model (DESIGN §4): its JSON Schema, validation and normalization."""
