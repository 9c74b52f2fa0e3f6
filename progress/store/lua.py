"""The Lua scripts that make every record change one atomic round trip.

Kept as data in one module so the sync (worker, views) and async (consumer)
sides run byte-identical scripts.
"""

# The progress of a record before its task reports any.
DEFAULT_PROGRESS_FRAGMENT = (
    '"progress":{"current":0,"total":null,"percent":null,"message":null},"eta":null,"meta":{}'
)

# The one place a record changes: check the state transition, assign the next
# seq, update the record and its capped history, refresh expiry, keep the
# stall deadline and the running-task index, PUBLISH the event to the task's
# channel-layer group (msgpack, as RedisPubSubChannelLayer expects). Both
# PUBLISH and MARK_LOST call it, so a LOST event is numbered like any other.
# Deadlines use Redis' clock (TIME), so workers and servers never compare
# their own clocks.
#
# Each command a script runs costs Redis 0.3-2 µs, most of a hot task's script
# time (docs/BENCHMARKS.md, "Publisher"), so a progress event that changes no
# state writes the record once (seq and event together) and trims the history
# only once it is full. The record keeps the latest event (`json`) although the
# history ends with it too: a snapshot then survives a lost history, and
# dropping it would not make the write cheaper. A lifecycle event, which brings
# no progress of its own, takes the progress from it (progress_of) rather than
# from a copy rewritten at every event.
_RECORD_EVENT = r"""
local DEFAULT_PROGRESS = '""" + DEFAULT_PROGRESS_FRAGMENT + r"""'
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Where the JSON object or array opening at s[i] closes (nil if it does not).
local function close_of(s, i)
  local depth = 0
  repeat
    i = string.find(s, '[%[%]{}"]', i)
    if not i then return nil end
    local c = string.byte(s, i)
    if c == 34 then  -- a string: skip it, escapes and all
      repeat
        i = string.find(s, '["\\]', i + 1)
        if not i then return nil end
        local escape = string.byte(s, i) == 92
        if escape then i = i + 1 end
      until not escape
    elseif c == 123 or c == 91 then
      depth = depth + 1
    else
      depth = depth - 1
    end
    i = i + 1
  until depth == 0
  return i - 1
end
-- The "progress", "eta" and "meta" members of an event record_event built,
-- verbatim (cjson would turn [] into {} and round numbers). Up to "meta"
-- everything is our own encoding, where `,"` never occurs inside a string, so
-- the first matches are the members; the task's meta is scanned to its end.
local function progress_of(json)
  if not json then return DEFAULT_PROGRESS end
  local first = string.find(json, ',"progress":{', 1, true)
  local meta = first and string.find(json, ',"meta":', first, true)
  local last = meta and close_of(json, meta + 8)
  if not last then return DEFAULT_PROGRESS end
  return string.sub(json, first + 1, last)
end
local function record_event(rec, hist, index, task_id, state, final, name_in, pfrag, rest,
                            epoch_candidate, hist_len, ttl, channel, stall, known_seq, eid)
  local cur = redis.call('HMGET', rec, 'state', 'final', 'epoch', 'name', 'seq', 'cancel', 'eid')
  local cur_state, epoch, name = cur[1], cur[3], cur[4]
  local rolled_back = false
  local cancel = 0
  if cur[6] then cancel = 1 end
  eid = eid or ''
  -- The same event again (a writer's retry after a timeout: the first try may
  -- have run): answer as the first time, record nothing.
  if eid ~= '' and cur[7] == eid then return {tonumber(cur[5]), cancel, cur_state} end
  if cur_state then
    -- PENDING only creates a record (a retry re-publishes the same id); a
    -- final record accepts nothing more, except a new attempt (STARTED)
    -- after LOST, when Celery delivers the task again.
    local new_attempt = cur_state == 'LOST' and state == 'STARTED'
    if state == 'PENDING' or (cur[2] == '1' and not new_attempt) then
      return {0, cancel, cur_state}
    end
    if pfrag == '' then pfrag = progress_of(redis.call('HGET', rec, 'json')) end
    -- The writer recorded a later seq than the record holds: a fail-over lost
    -- writes. A new epoch makes every watcher take a reset snapshot instead of
    -- skipping events numbered like ones it already saw.
    if known_seq and known_seq ~= '' and tonumber(known_seq) > (tonumber(cur[5]) or 0) then
      epoch = epoch_candidate
      rolled_back = true
    end
  else
    epoch = epoch_candidate
    name = 'null'
    if pfrag == '' then pfrag = DEFAULT_PROGRESS end
  end
  if name_in ~= '' then name = name_in end
  local seq = (tonumber(cur[5]) or 0) + 1
  local json = '{"epoch":"' .. epoch .. '","seq":' .. seq .. ',"name":' .. name
    .. ',"state":"' .. state .. '","final":' .. (final == '1' and 'true' or 'false')
    .. ',' .. pfrag .. ',' .. rest .. '}'
  if state == cur_state and name == cur[4] and not rolled_back then  -- `final` follows
    redis.call('HSET', rec, 'seq', seq, 'json', json, 'eid', eid)
  else
    redis.call('HSET', rec, 'seq', seq, 'json', json, 'eid', eid, 'epoch', epoch,
      'state', state, 'final', final, 'name', name)
  end
  if final == '1' or state == 'RETRY' then
    -- no attempt runs any more: nothing to watch for a stall
    redis.call('HDEL', rec, 'deadline')
    redis.call('ZREM', index, task_id)
  elseif stall ~= '' then
    local deadline = now() + tonumber(stall)
    redis.call('HSET', rec, 'deadline', tostring(deadline))
    redis.call('ZADD', index, deadline, task_id)
  end
  hist_len = tonumber(hist_len)
  if redis.call('RPUSH', hist, json) > hist_len then
    redis.call('LTRIM', hist, -hist_len, -1)
  end
  -- Expiry changes with the state; within a run of PROGRESS events the (long)
  -- active TTL is refreshed every 32nd event only: two EXPIREs per event would
  -- add a tenth to a hot task's script time.
  if state ~= cur_state or final == '1' or seq % 32 == 0 then
    redis.call('EXPIRE', rec, ttl)
    redis.call('EXPIRE', hist, ttl)
  end
  redis.call('PUBLISH', channel, cmsgpack.pack({
    type = 'task.event', task_id = task_id, epoch = epoch, seq = seq,
    state = state, final = (final == '1'), data = json}))
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
# KEYS: record, history, running index
# ARGV: task_id, group_channel, state, final("0"|"1"), name_json(""=keep),
#       stall_timeout(""=leave the deadline; else arm it: now + this many seconds),
#       history_length, ttl_seconds, then what changes with every event:
#       progress_fragment(""=keep), rest_fragment, epoch_candidate, known_seq (the last
#       seq this writer recorded for the task; "" = none: see record_event), event_id
#       (a retry of an event already recorded is answered, not recorded again)
# (a task's events repeat the arguments up to ttl_seconds: progress/store/script_runner.py
# packs them once).
# With a fourth key, Celery's result key of the task, the same call also writes
# it (the AsyncResult mirror, store_result above), whether or not the record took
# the event: its value is ARGV[9] .. the event's progress as one JSON object
# (`{"current", "total", "percent", "message", "eta", "meta"}`, cut from the
# progress fragment) .. ARGV[10], its expiry ARGV[11] ("0" = none), and the
# arguments that change with every event move up by three (ARGV[12..16]).
# Returns {seq (0 when refused), cancel_requested (0|1), state after the call}
PUBLISH = _RECORD_EVENT + _STORE_RESULT + """
local v = 9
if KEYS[4] then v = 12 end
local pfrag = ARGV[v]
local out = record_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4], ARGV[5], pfrag,
  ARGV[v + 1], ARGV[v + 2], ARGV[7], ARGV[8], ARGV[2], ARGV[6], ARGV[v + 3], ARGV[v + 4])
-- pfrag is '"progress":{' .. progress members .. '},"eta":' .. eta and meta;
-- `},"eta":` cannot occur earlier, inside a JSON string (its quotes are escaped there).
local close = KEYS[4] and string.find(pfrag, '},"eta":', 13, true)
if close then
  store_result(KEYS[4], ARGV[9] .. '{' .. string.sub(pfrag, 13, close - 1) .. ',"eta":'
    .. string.sub(pfrag, close + 8) .. '}' .. ARGV[10], ARGV[11])
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
# ARGV: task_id, rest fragment of the REVOKED event, history_length, final_ttl, channel
# Returns {state after the call ('' when no record exists), 1 when this call is the
# first to ask for the task's cancellation else 0}
REQUEST_CANCEL = _RECORD_EVENT + """
local r = redis.call('HMGET', KEYS[1], 'state', 'final', 'cancel')
if not r[1] then return {'', 0} end
if r[2] == '1' then return {r[1], 0} end
if r[1] == 'PENDING' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  local out = record_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], 'REVOKED', '1', '', '', ARGV[2],
    '', ARGV[3], ARGV[4], ARGV[5], '')
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
# ARGV: task_id, rest_fragment, history_length, ttl_seconds, group_channel
# Returns the new seq, or 0 when the task is not (or no longer) stalled.
MARK_LOST = _RECORD_EVENT + """
local deadline = redis.call('HGET', KEYS[1], 'deadline')
if not deadline then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
if tonumber(deadline) > now() then
  redis.call('ZADD', KEYS[3], deadline, ARGV[1])
  return 0
end
local out = record_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], 'LOST', '1', '', '', ARGV[2],
  '', ARGV[3], ARGV[4], ARGV[5], '')
if out[1] == 0 then  -- refused (already final): nothing left to watch
  redis.call('HDEL', KEYS[1], 'deadline')
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return out[1]
"""
