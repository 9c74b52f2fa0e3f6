"""The Lua scripts that make every record change one atomic round trip.

Kept as data in one module so the sync (worker, views) and async (consumer)
sides run byte-identical scripts.
"""

# Record one event: check the state transition, assign the next seq, update
# the record and its capped history, refresh expiry, PUBLISH the event to the
# task's channel-layer group (msgpack, as RedisPubSubChannelLayer expects) and
# tell the caller whether a cancel was requested.
#
# KEYS: record, history
# ARGV: task_id, state, final("0"|"1"), name_json(""=keep), progress_fragment(""=keep),
#       rest_fragment, epoch_candidate, history_length, ttl_seconds, group_channel,
#       heartbeat_deadline(""=leave)
# Returns {seq (0 when refused), cancel_requested (0|1), state after the call}
PUBLISH = """
local rec, hist = KEYS[1], KEYS[2]
local state, final = ARGV[2], ARGV[3]
local cur = redis.call('HMGET', rec, 'state', 'final', 'epoch', 'name', 'pfrag', 'cancel')
local cur_state, epoch, name, pfrag = cur[1], cur[3], cur[4], cur[5]
local cancel = 0
if cur[6] then cancel = 1 end
if cur_state then
  -- PENDING only creates a record (a retry re-publishes the same id); a
  -- final record accepts nothing more, except LOST, which Celery may
  -- follow with a new attempt of the same task.
  if state == 'PENDING' or (cur[2] == '1' and cur_state ~= 'LOST') then
    return {0, cancel, cur_state}
  end
else
  epoch = ARGV[7]
  name = 'null'
  pfrag = '"progress":{"current":0,"total":null,"percent":null,"message":null},"eta":null,"meta":{}'
end
if ARGV[4] ~= '' then name = ARGV[4] end
if ARGV[5] ~= '' then pfrag = ARGV[5] end
local seq = redis.call('HINCRBY', rec, 'seq', 1)
local json = '{"epoch":"' .. epoch .. '","seq":' .. seq .. ',"name":' .. name
  .. ',"state":"' .. state .. '","final":' .. (final == '1' and 'true' or 'false')
  .. ',' .. pfrag .. ',' .. ARGV[6] .. '}'
redis.call('HSET', rec, 'epoch', epoch, 'state', state, 'final', final,
  'name', name, 'pfrag', pfrag, 'json', json)
if ARGV[11] ~= '' then redis.call('HSET', rec, 'deadline', ARGV[11]) end
if final == '1' then redis.call('HDEL', rec, 'deadline') end
redis.call('RPUSH', hist, json)
redis.call('LTRIM', hist, -tonumber(ARGV[8]), -1)
redis.call('EXPIRE', rec, ARGV[9])
redis.call('EXPIRE', hist, ARGV[9])
redis.call('PUBLISH', ARGV[10], cmsgpack.pack({
  type = 'task.event', task_id = ARGV[1], epoch = epoch, seq = seq,
  state = state, final = (final == '1'), data = json}))
return {seq, cancel, state}
"""

# Read a record, and optionally the events after `since` from its history.
# KEYS: record, history   ARGV: since (-1 = snapshot only)
# Returns {} when no record, else {epoch, seq, json, covered(0|1), events...}
READ = """
local r = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'json')
if not r[1] then return {} end
local out = {r[1], r[2], r[3], 0}
local since = tonumber(ARGV[1])
if since < 0 then return out end
local missed = tonumber(r[2]) - since
if missed < 0 then return out end
if missed > redis.call('LLEN', KEYS[2]) then return out end
out[4] = 1
if missed > 0 then
  local events = redis.call('LRANGE', KEYS[2], -missed, -1)
  for i = 1, #events do out[#out + 1] = events[i] end
end
return out
"""

# Ask a task to stop: flag the record unless it is final.
# KEYS: record   Returns the current state, or false when no record exists.
REQUEST_CANCEL = """
local r = redis.call('HMGET', KEYS[1], 'state', 'final')
if not r[1] then return false end
if r[2] ~= '1' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return r[1]
"""
