"""The wire protocol's objects: states, error codes, task ids, frame and record
shapes and JSON encoding (docs/PROTOCOL.md)."""
