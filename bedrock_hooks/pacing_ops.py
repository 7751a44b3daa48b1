"""Pacing's operations for a state store: :mod:`bedrock_hooks.pacing` as :class:`~bedrock_hooks.store.Operation` s.

Each operation is the pure Python function of :mod:`~bedrock_hooks.pacing` (run by the in-process
store, under its lock) and its line-by-line Lua port (run atomically by Redis, so every process of a
fleet books on one schedule without a read-modify-write race). tests/test_store_contract.py runs random
sequences through both and asserts they agree; a change to pacing.py must change the Lua here too.

Arguments travel as floats: the operation's own, then the 12 fields of
:class:`~bedrock_hooks.pacing.PacingConfig` in order. A scope without state starts from
:func:`~bedrock_hooks.pacing.new_state`. Results: ``reserve`` -> (wait, engaged), ``settle`` -> (shift,
engaged), ``observe`` -> (rate, engaged).
"""

from __future__ import annotations

from . import pacing
from .pacing import PacingConfig
from .store import Operation, State

#: The store family of pacing states.
FAMILY = "rate"
_CONFIG_FIELDS = len(PacingConfig._fields)


def ttl(config: PacingConfig) -> float:
    """Seconds a pacing state lives after its last update (plus any schedule booked ahead): long enough
    that forgetting it changes nothing :func:`pacing.quiet` would keep."""
    return config.reset_after + config.burst + 2 * config.window + 1.0


def config_args(config: PacingConfig) -> tuple[float, ...]:
    return tuple(float(v) for v in config)


def _start(state: State, now: float, config: PacingConfig) -> pacing.State:
    return dict(state) if state else pacing.new_state(now, config)


def _ahead(state: State, now: float) -> float:
    return max(0.0, state["tat"] - now)


def _reserve(state: State, now: float, cost: float, max_wait: float, *config: float):
    cfg = PacingConfig(*config)
    new, wait = pacing.reserve(_start(state, now, cfg), cost, now, max_wait, cfg)
    return new, (wait, new["engaged"]), _ahead(new, now)


def _settle(state: State, now: float, delta: float, *config: float):
    cfg = PacingConfig(*config)
    new, shift = pacing.settle(_start(state, now, cfg), delta, now, cfg)
    return new, (shift, new["engaged"]), _ahead(new, now)


def _observe(state: State, now: float, throttled: float, sent_at: float, *config: float):
    cfg = PacingConfig(*config)
    new, rate = pacing.observe(_start(state, now, cfg), bool(throttled), sent_at, now, cfg)
    return new, (rate, new["engaged"]), _ahead(new, now)


#: The Lua port of pacing.py: same names, same order, same arithmetic (doubles on both sides).
_LUA_PACING = """
local NEVER = -1e18
local PROBE_BACK = 3.0
local function cfg(a, i)
  return {fixed_rate = a[i], burst = a[i + 1], beta = a[i + 2], scale = a[i + 3], min_rate = a[i + 4],
          max_rate_factor = a[i + 5], window = a[i + 6], engage_share = a[i + 7], min_sample = a[i + 8],
          min_observed = a[i + 9], reset_after = a[i + 10], probe = a[i + 11]}
end
local function new_state(now, c)
  local fixed = c.fixed_rate > 0
  return {born = now, engaged = fixed and 1 or 0, rate = fixed and c.fixed_rate or 0, tat = now, w_max = 0,
          k = 0, last_cut = NEVER, last_throttle = NEVER, cost_avg = 0, win_start = now, sent = 0,
          sent_prev = 0, resp = 0, resp_prev = 0, thr = 0, thr_prev = 0, throttles = 0, reductions = 0}
end
local function start(s, now, c)
  if s['born'] == nil then return new_state(now, c) end
  return s
end
local function roll(s, now, window)
  local elapsed = now - s.win_start
  if elapsed < window then return end
  if elapsed < 2 * window then
    s.sent_prev, s.resp_prev, s.thr_prev = s.sent, s.resp, s.thr
    s.win_start = s.win_start + window
  else
    s.sent_prev, s.resp_prev, s.thr_prev = 0, 0, 0
    s.win_start = now
  end
  s.sent, s.resp, s.thr = 0, 0, 0
end
local function windowed(s, now, window, name)
  local overlap = math.max(0, 1 - (now - s.win_start) / window)
  return s[name] + s[name .. '_prev'] * overlap
end
local function span(s, now, c)
  return math.min(c.window, math.max(0.1 * c.window, now - s.born))
end
local function measured_rate(s, now, c)
  return math.max(0, windowed(s, now, c.window, 'sent')) / span(s, now, c)
end
local function throttled_share(s, now, c)
  local answers = windowed(s, now, c.window, 'resp')
  if answers > 0 then return windowed(s, now, c.window, 'thr') / answers end
  return 0
end
local function delivered_rate(s, now, c)
  local successes = windowed(s, now, c.window, 'resp') - windowed(s, now, c.window, 'thr')
  return math.max(0, successes) * math.max(s.cost_avg, 1) / span(s, now, c)
end
local function anchor(s, now, upper, c)
  return math.min(upper, math.max(delivered_rate(s, now, c), c.beta * c.beta * upper))
end
local function pressure(s, now, c)
  return now - s.born >= c.min_observed and windowed(s, now, c.window, 'resp') >= c.min_sample
    and throttled_share(s, now, c) >= c.engage_share
end
local function floor_rate(s, c)
  return c.min_rate * math.max(s.cost_avg, 1)
end
local function cut(s, now, base, c)
  local fl = floor_rate(s, c)
  base = math.max(base, fl)
  local scale = c.scale * math.max(s.cost_avg, 1)
  s.w_max = base
  s.k = (base * (1 - c.beta) / scale) ^ (1 / 3)
  s.rate = math.max(fl, base * c.beta)
  s.last_cut = now
  s.reductions = s.reductions + 1
end
local function grow(s, now, c)
  local scale = c.scale * math.max(s.cost_avg, 1)
  local fl = floor_rate(s, c)
  local past = now - s.last_cut - s.k
  local cubic = scale * past ^ 3 + s.w_max
  if c.probe > 0 and past > 0 then cubic = math.min(cubic, s.w_max * (1 + c.probe * past)) end
  local ceiling = c.max_rate_factor * math.max(delivered_rate(s, now, c), fl)
  local rate = math.max(fl, math.min(cubic, math.max(ceiling, s.rate)))  -- the ceiling stops growth; it never cuts
  if rate ~= rate or rate == math.huge or rate == -math.huge then rate = fl end
  s.rate = rate
end
local function ahead(s, now)
  return math.max(0, s.tat - now)
end
local function reserve(s, cost, now, max_wait, c)
  roll(s, now, c.window)
  cost = math.max(0, cost)
  if s.cost_avg <= 0 then s.cost_avg = cost else s.cost_avg = s.cost_avg + (cost - s.cost_avg) / 8 end
  if s.engaged ~= 0 and c.fixed_rate <= 0 and now - s.last_throttle > c.reset_after then
    s.engaged, s.rate = 0, 0
  end
  local wait = 0
  if s.engaged ~= 0 and s.rate > 0 then
    local slot = math.max(s.tat - c.burst, now)
    wait = math.max(0, math.min(slot - now, max_wait))
    s.tat = math.min(math.max(s.tat, now) + cost / s.rate, now + wait + c.burst + cost / s.rate)
  end
  s.sent = s.sent + cost
  return wait
end
local function settle(s, delta, now, c)
  roll(s, now, c.window)
  s.sent = s.sent + delta
  local shift = 0
  if s.engaged ~= 0 and s.rate > 0 then
    local from = math.max(s.tat, now)
    s.tat = math.max(now, from + delta / s.rate)
    shift = s.tat - from
  end
  return shift
end
local function observe(s, throttled, sent_at, now, c)
  roll(s, now, c.window)
  s.resp = s.resp + 1
  local fixed = c.fixed_rate > 0
  if not throttled then
    if s.engaged ~= 0 and not fixed then grow(s, now, c) end
    if s.engaged ~= 0 then return s.rate end
    return 0
  end
  s.thr = s.thr + 1
  s.throttles = s.throttles + 1
  s.last_throttle = now
  if s.engaged == 0 then
    if pressure(s, now, c) then
      s.engaged = 1
      cut(s, now, anchor(s, now, measured_rate(s, now, c), c), c)
      s.tat = now + c.burst
    end
    if s.engaged ~= 0 then return s.rate end
    return 0
  end
  if sent_at >= s.last_cut then
    s.tat = math.max(s.tat, now + c.burst)
    if fixed then
      s.last_cut = now
    elseif pressure(s, now, c) and (now - s.last_cut >= c.window or s.rate > delivered_rate(s, now, c)) then
      cut(s, now, anchor(s, now, s.rate, c), c)
    elseif c.probe > 0 then
      s.w_max = math.max(floor_rate(s, c), math.min(s.rate, s.w_max) * (1 - PROBE_BACK * c.probe))
      s.rate, s.k, s.last_cut = s.w_max, 0, now
    end
  end
  return s.rate
end
"""

_RESERVE_LUA = _LUA_PACING + """
local function op(s, now, a)
  local c = cfg(a, 3)
  s = start(s, now, c)
  local wait = reserve(s, a[1], now, a[2], c)
  return s, {wait, s.engaged}, ahead(s, now)
end
"""
_SETTLE_LUA = _LUA_PACING + """
local function op(s, now, a)
  local c = cfg(a, 2)
  s = start(s, now, c)
  local shift = settle(s, a[1], now, c)
  return s, {shift, s.engaged}, ahead(s, now)
end
"""
_OBSERVE_LUA = _LUA_PACING + """
local function op(s, now, a)
  local c = cfg(a, 3)
  s = start(s, now, c)
  local rate = observe(s, a[1] ~= 0, a[2], now, c)
  return s, {rate, s.engaged}, ahead(s, now)
end
"""

RESERVE = Operation("pacing_reserve", _reserve, _RESERVE_LUA)
SETTLE = Operation("pacing_settle", _settle, _SETTLE_LUA)
OBSERVE = Operation("pacing_observe", _observe, _OBSERVE_LUA)
