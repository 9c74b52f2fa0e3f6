"""The Lua scripts that make every record change one atomic round trip.

Kept as data in one module so the sync (worker, views) and async (consumer)
sides run byte-identical scripts.
"""

from progress.wire.event_json import DEFAULT_PROGRESS, ENCODE_EVENT_LUA, PROGRESS_INFO_LUA

# The one place a record changes: check the state transition, assign the next
# seq, update the record and its capped history, refresh expiry, keep the
# stall deadline and the running-task index, PUBLISH the event to the task's
# channel-layer group (msgpack, as RedisPubSubChannelLayer expects). PUBLISH,
# REQUEST_CANCEL, MARK_LOST and a group's update (progress/store/groups.py) call
# it, so every event is numbered alike.
# Deadlines use Redis' clock (TIME), so workers and servers never compare
# their own clocks.
#
# record_event(rec, hist, index, e) takes the event as one table `e`, its
# members named (progress/store/records.py `event_args` builds it, msgpack-encoded
# as the script's one argument):
#   task_id, task_id_json, channel, state, final (boolean),
#   name (JSON; nil: keep the record's), progress, eta, meta (JSON; nil: keep the
#   record's), result, error (JSON), updated_at,
#   epoch (a candidate: taken when the record starts or rolls back), history (length),
#   ttl (seconds), stall (nil: leave the deadline; else arm it: now + this many s),
#   known_seq (nil: none; the last seq this writer recorded for the task),
#   eid (nil: none; a retry of an event already recorded is answered, not recorded again)
# The object itself is written by encode_event (progress/wire/event_json.py).
#
# Each command a script runs costs Redis 0.3-2 µs, most of a hot task's script
# time (docs/BENCHMARKS.md, "Publisher"), so a progress event that changes no
# state writes the record once (seq, event and progress members together) and
# trims the history only once it is full. The record keeps the latest event
# (`json`) although the history ends with it too: a snapshot then survives a
# lost history. It keeps the progress members apart as well (with `pseq`, the
# seq they belong to), for a lifecycle event, which brings no progress of its
# own, to take them as they are.
_RECORD_EVENT = ENCODE_EVENT_LUA + r"""
local DEFAULT_PROGRESS = {progress = '""" + DEFAULT_PROGRESS.progress + r"""',
  eta = '""" + DEFAULT_PROGRESS.eta + r"""', meta = '""" + DEFAULT_PROGRESS.meta + r"""'}
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- The progress members of a record written before they were kept apart (the
-- release before this one): decoded from its latest event.
local function legacy_progress(json)
  local ok, obj = pcall(cjson.decode, json or '')
  if not ok or type(obj) ~= 'table' or type(obj.progress) ~= 'table' then
    return DEFAULT_PROGRESS
  end
  return {progress = cjson.encode(obj.progress), eta = cjson.encode(obj.eta),
    meta = cjson.encode(obj.meta)}
end
local function record_event(rec, hist, index, e)
  local cur = redis.call('HMGET', rec, 'state', 'final', 'epoch', 'name', 'seq', 'cancel', 'eid',
    'pseq')
  local cur_state, epoch, name = cur[1], cur[3], cur[4]
  local state, final = e.state, e.final and '1' or '0'
  local rolled_back = false
  local cancel = 0
  if cur[6] then cancel = 1 end
  local eid = e.eid or ''
  -- The same event again (a writer's retry after a timeout: the first try may
  -- have run): answer as the first time, record nothing.
  if eid ~= '' and cur[7] == eid then return {tonumber(cur[5]), cancel, cur_state} end
  local own_progress = e.progress ~= nil
  if cur_state then
    -- PENDING only creates a record (a retry re-publishes the same id); a
    -- final record accepts nothing more, except a new attempt (STARTED)
    -- after LOST, when Celery delivers the task again.
    local new_attempt = cur_state == 'LOST' and state == 'STARTED'
    if state == 'PENDING' or (cur[2] == '1' and not new_attempt) then
      return {0, cancel, cur_state}
    end
    if not own_progress then
      -- Kept with the latest event (`pseq`), unless a writer of the previous release
      -- wrote one since (or the record is older): then from the event itself.
      if cur[8] == cur[5] then
        local kept = redis.call('HMGET', rec, 'progress', 'eta', 'meta')
        e.progress, e.eta, e.meta = kept[1], kept[2], kept[3]
      else
        local kept = legacy_progress(redis.call('HGET', rec, 'json'))
        e.progress, e.eta, e.meta = kept.progress, kept.eta, kept.meta
      end
    end
    -- The writer recorded a later seq than the record holds: a fail-over lost
    -- writes. A new epoch makes every watcher take a reset snapshot instead of
    -- skipping events numbered like ones it already saw.
    if e.known_seq and e.known_seq > (tonumber(cur[5]) or 0) then
      epoch = e.epoch
      rolled_back = true
    end
  else
    epoch = e.epoch
    name = 'null'
    if not own_progress then
      e.progress, e.eta, e.meta = DEFAULT_PROGRESS.progress, DEFAULT_PROGRESS.eta,
        DEFAULT_PROGRESS.meta
    end
  end
  if e.name then name = e.name end
  local seq = (tonumber(cur[5]) or 0) + 1
  local json = encode_event(e, epoch, seq, name)
  if state == cur_state and name == cur[4] and not rolled_back then  -- `final` follows
    redis.call('HSET', rec, 'seq', seq, 'json', json, 'eid', eid,
      'progress', e.progress, 'eta', e.eta, 'meta', e.meta, 'pseq', seq)
  else
    redis.call('HSET', rec, 'seq', seq, 'json', json, 'eid', eid, 'epoch', epoch,
      'state', state, 'final', final, 'name', name,
      'progress', e.progress, 'eta', e.eta, 'meta', e.meta, 'pseq', seq)
  end
  if final == '1' or state == 'RETRY' then
    -- no attempt runs any more: nothing to watch for a stall
    redis.call('HDEL', rec, 'deadline')
    redis.call('ZREM', index, e.task_id)
  elseif e.stall then
    local deadline = now() + e.stall
    redis.call('HSET', rec, 'deadline', tostring(deadline))
    redis.call('ZADD', index, deadline, e.task_id)
  end
  local hist_len = e.history
  if redis.call('RPUSH', hist, json) > hist_len then
    redis.call('LTRIM', hist, -hist_len, -1)
  end
  -- Expiry changes with the state; within a run of PROGRESS events the (long)
  -- active TTL is refreshed every 32nd event only: two EXPIREs per event would
  -- add a tenth to a hot task's script time.
  if state ~= cur_state or final == '1' or seq % 32 == 0 then
    redis.call('EXPIRE', rec, e.ttl)
    redis.call('EXPIRE', hist, e.ttl)
  end
  redis.call('PUBLISH', e.channel, cmsgpack.pack({
    type = 'task.event', task_id = e.task_id, epoch = epoch, seq = seq,
    state = state, final = e.final, data = json}))
  return {seq, cancel, state}
end
"""

# What Celery's RedisBackend.store_result does to a task's result key (SET with
# expiry, PUBLISH on the key for waiting .get() calls, never overwriting a
# stored SUCCESS), for the AsyncResult mirror (progress/integrations/celery/interop.py).
# The stored status is read whatever the JSON spacing: from the leading
# "status" member when there is one (Celery writes it first; a pattern, no
# decoding), else with cjson. Unlike Celery it leaves FAILURE and REVOKED alone
# too: a mirrored PROGRESS that waited in the worker's outbox while Redis was
# away may arrive after the task ended.
_STORE_RESULT = r"""
local READY = {SUCCESS = true, FAILURE = true, REVOKED = true}
local function stored_status(value)
  local status = string.match(value, '^%s*{%s*"status"%s*:%s*"(%u+)"')
  if status then return status end
  local ok, meta = pcall(cjson.decode, value)
  if ok and type(meta) == 'table' then return meta['status'] end
  return nil
end
local function store_result(key, value, expires)
  local cur = redis.call('GET', key)
  if cur and READY[stored_status(cur)] then return 0 end
  if expires ~= '0' and expires ~= '' then
    redis.call('SET', key, value, 'EX', expires)
  else
    redis.call('SET', key, value)
  end
  redis.call('PUBLISH', key, value)
  return 1
end
"""

# Record one event and tell the caller whether a cancel was requested.
# KEYS: record, history, running index[, Celery's result key of the task]
# ARGV[1]: the event table (record_event above), msgpack-encoded
# With a fourth key the same call also writes the result key (the AsyncResult
# mirror, store_result above), whether or not the record took the event: its
# value is e.result_before .. the event's progress as one object
# (progress_info) .. e.result_after, its expiry e.result_expires (0 = none).
# Returns {seq (0 when refused), cancel_requested (0|1), state after the call}
PUBLISH = _RECORD_EVENT + PROGRESS_INFO_LUA + _STORE_RESULT + """
local e = cmsgpack.unpack(ARGV[1])
local own_progress = e.progress ~= nil
local out = record_event(KEYS[1], KEYS[2], KEYS[3], e)
if KEYS[4] and own_progress then
  store_result(KEYS[4], e.result_before .. progress_info(e) .. e.result_after,
    tostring(e.result_expires))
end
return out
"""

# The AsyncResult mirror on its own, when the record is on another server than
# Celery's results (progress/integrations/celery/interop.py).
# KEYS: result key   ARGV: encoded meta (JSON), expiry seconds ("0" = none)
# Returns 1 when written, 0 when a final state was stored there.
MIRROR = _STORE_RESULT + """
return store_result(KEYS[1], ARGV[1], ARGV[2])
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

# Ask a task to stop, deciding on the state as it is now, in one step: a
# queued (PENDING) task is recorded REVOKED here, so a worker that picks it up
# a moment later finds a final record (its STARTED is refused) instead of
# watchers seeing REVOKED for a task that then ran; a running one is flagged,
# and its next progress call or heartbeat sees the flag.
# KEYS: record, history, running index
# ARGV[1]: the REVOKED event table (record_event above), msgpack-encoded
# Returns {state after the call ('' when no record exists), 1 when this call is the
# first to ask for the task's cancellation else 0}
REQUEST_CANCEL = _RECORD_EVENT + """
local r = redis.call('HMGET', KEYS[1], 'state', 'final', 'cancel')
if not r[1] then return {'', 0} end
if r[2] == '1' then return {r[1], 0} end
if r[1] == 'PENDING' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  local out = record_event(KEYS[1], KEYS[2], KEYS[3], cmsgpack.unpack(ARGV[1]))
  return {out[3], 1}
end
if r[3] then return {r[1], 0} end
redis.call('HSET', KEYS[1], 'cancel', '1')
return {r[1], 1}
"""

# A worker's heartbeat for one running task: push its stall deadline out,
# unless the deadline is disarmed (the task ended, or was marked LOST).
# KEYS: record, running index   ARGV: task_id, stall_timeout
# Returns {armed (0|1), cancel_requested (0|1)}
BEAT = """
local r = redis.call('HMGET', KEYS[1], 'deadline', 'cancel')
local cancel = 0
if r[2] then cancel = 1 end
if not r[1] then return {0, cancel} end
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'deadline', tostring(deadline))
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return {1, cancel}
"""

# The running tasks whose stall deadline has passed (by Redis' clock).
# KEYS: running index   ARGV: max ids to return
DUE = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', t[1] .. '.' .. string.format('%06d', t[2]),
  'LIMIT', 0, tonumber(ARGV[1]))
"""

# Mark a stalled task LOST, exactly once whatever the number of sweepers: the
# deadline is checked and cleared in the same atomic step that records LOST.
# KEYS: record, history, running index
# ARGV[1]: the LOST event table (record_event above), msgpack-encoded
# Returns the new seq, or 0 when the task is not (or no longer) stalled.
MARK_LOST = _RECORD_EVENT + """
local e = cmsgpack.unpack(ARGV[1])
local deadline = redis.call('HGET', KEYS[1], 'deadline')
if not deadline then
  redis.call('ZREM', KEYS[3], e.task_id)
  return 0
end
if tonumber(deadline) > now() then
  redis.call('ZADD', KEYS[3], deadline, e.task_id)
  return 0
end
local out = record_event(KEYS[1], KEYS[2], KEYS[3], e)
if out[1] == 0 then  -- refused (already final): nothing left to watch
  redis.call('HDEL', KEYS[1], 'deadline')
  redis.call('ZREM', KEYS[3], e.task_id)
end
return out[1]
"""
