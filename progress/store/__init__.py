"""The Redis record store: keys, Lua scripts, records and history, shards and
connections, the worker's outbox, group aggregation and the stall sweeper."""
