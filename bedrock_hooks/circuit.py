"""The circuit breaker's state and its two operations, as data: pure Python functions and their Lua ports.

A circuit opens when ``threshold`` throttling/unavailable errors of one scope fall within ``window``
seconds, and stays open ``cooldown`` seconds. Only the last ``threshold`` error times matter for
that test (the oldest of them must be inside the window), so the state is a ring of at most
``threshold`` times plus ``open`` (until when): flat floats, the same in a Python dict and in a Redis
hash, which :mod:`bedrock_hooks.store` updates atomically (one Lua script on Redis, one lock in
process). tests/test_store_contract.py checks that both versions agree.
"""

from __future__ import annotations

from .store import Operation, State

#: The store family of circuit states.
FAMILY = "circuit"


def pressure(state: State, now: float, threshold: float, window: float, cooldown: float
             ) -> tuple[State, tuple[float, ...]]:
    """Record one error at ``now``: ``(new state, (1.0 if this one opened the circuit else 0.0, open until))``."""
    size = max(1, int(threshold))
    s = dict(state)
    if int(s.get("k", size)) != size:  # another threshold: its ring is not ours
        s = {"open": s["open"]} if "open" in s else {}
    n, i = int(s.get("n", 0)), int(s.get("i", 0))
    s[f"t{i}"] = now
    i, n = (i + 1) % size, min(n + 1, size)
    s.update(k=float(size), n=float(n), i=float(i))
    open_until = s.get("open", 0.0)
    if open_until <= now and n >= size and s[f"t{i}"] >= now - window:  # full: t{i} is the oldest
        open_until = now + cooldown
        return {"open": open_until}, (1.0, open_until)
    return s, (0.0, open_until)


def status(state: State, now: float) -> tuple[State, tuple[float, ...]]:
    """``(state, (open until,))``: read only."""
    return state, (state.get("open", 0.0),)


_PRESSURE_LUA = """
local function op(s, now, a)
  local threshold, window, cooldown = a[1], a[2], a[3]
  local size = math.max(1, math.floor(threshold))
  if math.floor(s['k'] or size) ~= size then s = {open = s['open']} end
  local n, i = math.floor(s['n'] or 0), math.floor(s['i'] or 0)
  s['t' .. i] = now
  i, n = (i + 1) % size, math.min(n + 1, size)
  s['k'], s['n'], s['i'] = size, n, i
  local open_until = s['open'] or 0
  if open_until <= now and n >= size and s['t' .. i] >= now - window then
    open_until = now + cooldown
    return {open = open_until}, {1, open_until}
  end
  return s, {0, open_until}
end
"""

_STATUS_LUA = """
local function op(s, now, a)
  return s, {s['open'] or 0}
end
"""

PRESSURE = Operation("circuit_pressure", pressure, _PRESSURE_LUA)
STATUS = Operation("circuit_status", status, _STATUS_LUA, readonly=True)
