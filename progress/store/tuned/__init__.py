"""The record store's uses of other libraries' internals, each behind a guard.

- script_socket.py: the publisher's EVALSHA written and read on redis-py's
  socket (SCRIPT_RUNNER); progress/store/script_runner.py uses it, else
  redis-py's public client.
- channels_redis_hash.py: channels_redis' private `_consistent_hash`
  (SHARD_HASH); progress/store/shards.py uses it, else its own copy.
- takeover_check.py: the self-test of every socket takeover (this package's
  and the launcher's pub/sub reader, consumers/server/socket_link.py).

Only script_runner.py and shards.py import this package (the import-linter
contract "Only the record store's entry points reach its tunings").
"""
