"""Groups and chords watched as one task id: the record-store side.

A task system's integration (progress/integrations/celery/groups.py) gives a
group its own record (PENDING at once) and a members hash, then starts the
group with that id as the system's group id. Every member event then also
updates the group in one atomic script, which aggregates the members'
progress and publishes the group's event like any task's: PROGRESS while members
run, SUCCESS once all succeeded, FAILURE (with a
summary) once all are final and one did not succeed.

With several shards the group's keys (members, record, history) live on the
group id's shard and each member's record on its own: the member script only
touches the group's keys, after the member's event is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from progress import conf
from progress.process_state import ProcessSlot
from progress.store import keys, lua, shards
from progress.store.connections import sync_client
from progress.store.records import EventDraft, new_epoch
from progress.wire.encoding import utc_now_iso
from progress.wire.states import is_final

MEMBER_PREFIX = "c:"
NEW_MEMBER = "PENDING|0|0"  # state|final|fraction, as MEMBER_EVENT reads it

# Update one member, re-aggregate the group and record the group's event
# through the same record_event() every task event goes through.
# KEYS: members, group record, group history, running index
# ARGV: member_id, member_state, member_final("0"|"1"), member_fraction(""=keep),
#       member_error(""=none), member_result_json, group_id, epoch_candidate,
#       history_length, active_ttl, final_ttl, group_channel, updated_at,
#       repair ("1": a member's final counted again after a lossy fail-over, see
#       count_again(); else "")
# Returns {group seq (0: nothing published), 1 when member_id is a member else 0}
MEMBER_EVENT = lua._RECORD_EVENT + """
local members = KEYS[1]
local field = 'c:' .. ARGV[1]
local prev = redis.call('HGET', members, field)
if not prev then return {0, 0} end
local pstate, pfinal, pfrac = string.match(prev, '^(%u+)|(%d)|(.*)$')
local state, final, frac = ARGV[2], ARGV[3], ARGV[4]
-- a final member changes no more, except a new attempt after LOST
if pfinal == '1' and not (pstate == 'LOST' and state == 'STARTED') then return {0, 1} end
if frac == '' then frac = pfrac end
if state == 'SUCCESS' then frac = '1' end
redis.call('HSET', members, field, state .. '|' .. final .. '|' .. frac)
if ARGV[5] ~= '' and redis.call('HEXISTS', members, 'err') == 0 then
  redis.call('HSET', members, 'err', ARGV[5])
end
local body = redis.call('HGET', members, 'body')
local n, done, ok, running, sum = 0, 0, 0, 0, 0
local header_left, header_failed, body_state = 0, 0, nil
local all = redis.call('HGETALL', members)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'c:' then
    local id = string.sub(all[i], 3)
    local s, f, fr = string.match(all[i + 1], '^(%u+)|(%d)|(.*)$')
    n = n + 1
    if f == '1' then
      done = done + 1
      sum = sum + 1
      if s == 'SUCCESS' then ok = ok + 1 end
    else
      if s ~= 'PENDING' then running = running + 1 end
      sum = sum + (tonumber(fr) or 0)
    end
    if id == body then
      if f == '1' then body_state = s end
    elseif f ~= '1' then
      header_left = header_left + 1
    elseif s ~= 'SUCCESS' then
      header_failed = header_failed + 1
    end
  end
end
local failed = done - ok
local gstate = 'PROGRESS'
if header_left == 0 then
  if header_failed > 0 then gstate = 'FAILURE'      -- a chord body never runs then
  elseif not body then gstate = 'SUCCESS'
  elseif body_state == 'SUCCESS' then gstate = 'SUCCESS'
  elseif body_state then gstate = 'FAILURE' end
end
local gfinal = (gstate == 'PROGRESS') and '0' or '1'
local result, err = 'null', 'null'
if gstate == 'SUCCESS' then
  if body and ARGV[1] == body then result = ARGV[6]
  else result = cjson.encode({total = n, succeeded = ok}) end
elseif gstate == 'FAILURE' then
  local first = redis.call('HGET', members, 'err') or 'unknown error'
  err = cjson.encode({type = 'GroupFailed',
    message = failed .. ' of ' .. n .. ' failed; first: ' .. first})
end
local percent = 'null'
if n > 0 then percent = tostring(math.floor(sum * 10000 / n + 0.5) / 100) end
local progress = '{"current":' .. tostring(math.floor(sum * 1000 + 0.5) / 1000)
  .. ',"total":' .. n .. ',"percent":' .. percent
  .. ',"message":' .. cjson.encode(done .. ' of ' .. n .. ' done') .. '}'
local meta = cjson.encode({total = n, done = done, succeeded = ok, failed = failed,
  running = running})
local ttl = (gfinal == '1') and ARGV[11] or ARGV[10]
redis.call('EXPIRE', members, ttl)
-- A repair: the fail-over that lost the member's count may have taken the group's
-- later events with it, and no writer knows the group's last seq. Claiming one past
-- the record's makes record_event start a new epoch, so the group's watchers get a
-- reset snapshot rather than skip events numbered like ones they saw.
local known = nil
if ARGV[14] == '1' then
  known = (tonumber(redis.call('HGET', KEYS[2], 'seq')) or 0) + 1
end
local out = record_event(KEYS[2], KEYS[3], KEYS[4], {
  task_id = ARGV[7], task_id_json = cjson.encode(ARGV[7]), channel = ARGV[12],
  state = gstate, final = gfinal == '1', progress = progress, eta = 'null', meta = meta,
  result = result, error = err, updated_at = ARGV[13], epoch = ARGV[8],
  history = tonumber(ARGV[9]), ttl = tonumber(ttl), known_seq = known})
return {out[1], 1}
"""


def create_members(group_id: str, member_ids: Iterable[str], body_id: str | None = None) -> None:
    """Write a group's members hash (all PENDING), before any member can run."""
    fields: dict[Any, Any] = {  # redis-py types the mapping invariantly
        MEMBER_PREFIX + member_id: NEW_MEMBER for member_id in member_ids}
    if not fields:
        raise ValueError("a group needs at least one member")
    if body_id is not None:
        fields[MEMBER_PREFIX + body_id] = NEW_MEMBER
        fields["body"] = body_id
    members_key = keys.group_members_key(group_id)
    with sync_client(shards.shard_of(group_id)).pipeline() as pipe:
        pipe.hset(members_key, mapping=fields)
        pipe.expire(members_key, conf.active_ttl())
        pipe.execute()


def member_ids(group_id: str) -> list[str]:
    """The members of a watched group (empty when `group_id` is not one)."""
    fields = sync_client(shards.shard_of(group_id)).hkeys(keys.group_members_key(group_id))
    names = (f.decode() if isinstance(f, bytes) else str(f) for f in fields)
    return [name[len(MEMBER_PREFIX):] for name in names if name.startswith(MEMBER_PREFIX)]


# shard -> MEMBER_EVENT on this process's client of it
_scripts: ProcessSlot[dict[int, Any]] = ProcessSlot(dict, settings=shards.SETTINGS)


def member_event(group_id: str, draft: EventDraft, fraction: float | None,
                 repair: bool = False) -> bool:
    """Aggregate one member event into its group (on the group's shard); False when
    the task is not a member. A member's final is counted once: the group ignores
    anything after it (`repair`: see count_again())."""
    shard = shards.shard_of(group_id)
    client = sync_client(shard)
    scripts = _scripts.get()
    script = scripts.get(shard)
    if script is None or script.registered_client is not client:
        script = scripts[shard] = client.register_script(MEMBER_EVENT)
    error = draft.error
    error_text = f"{error.get('type', 'Error')}: {error.get('message', '')}" if error else ""
    final = is_final(draft.state)
    raw = script(
        keys=[keys.group_members_key(group_id), keys.record_key(group_id),
              keys.history_key(group_id), keys.running_index_key()],
        args=[draft.task_id, draft.state.value, "1" if final else "0",
              "" if fraction is None else repr(fraction), error_text, draft.result_json,
              group_id, new_epoch(), conf.history_length(), conf.active_ttl(),
              conf.final_ttl(), keys.group_channel(group_id), utc_now_iso(),
              "1" if repair else ""])
    return bool(int(raw[1]))


def uncounted(finals: Iterable[EventDraft]) -> list[EventDraft]:
    """The members' finals (each with its `group_id`) their group has not counted: the
    members hash has the member, not final (a fail-over lost the group's update, or
    Redis was away when the final was recorded). One round trip per group shard."""
    by_shard: dict[int, list[EventDraft]] = {}
    for draft in finals:
        if draft.group_id is not None:
            by_shard.setdefault(shards.shard_of(draft.group_id), []).append(draft)
    found: list[EventDraft] = []
    for shard, drafts in by_shard.items():
        pipe = sync_client(shard).pipeline(transaction=False)
        for draft in drafts:
            pipe.hget(keys.group_members_key(str(draft.group_id)), MEMBER_PREFIX + draft.task_id)
        for draft, entry in zip(drafts, pipe.execute(), strict=True):
            # state|final|fraction (NEW_MEMBER); none: the group is gone, nothing to count in
            if entry is not None and entry.split(b"|")[1] == b"0":
                found.append(draft)
    return found


def count_again(draft: EventDraft) -> None:
    """Count a member's final its group lost (uncounted()) as the final first was,
    the group's event in a new epoch (watchers get a reset snapshot)."""
    if draft.group_id is not None:
        member_event(draft.group_id, draft, None, repair=True)
