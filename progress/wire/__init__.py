"""The wire protocol's objects: states, error codes, task ids, frame and record
shapes, JSON encoding and tokens (docs/PROTOCOL.md)."""
