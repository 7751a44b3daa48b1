"""The pacing algorithm of one quota scope, as pure functions of a flat state (issue 14).

Bedrock throttles by tokens per minute per (account, Region, model): at the start of a request it
reserves ``input + max_tokens`` and at the end settles the reservation with the real usage. The
limiter mirrors that: :func:`reserve` books a request's estimated cost on a GCRA schedule (virtual
time ``tat`` advancing ``cost / rate`` per request) and says how long to wait; :func:`settle` books
the difference the real usage makes; :func:`observe` learns the rate from the answers (cut on
throttling at most once per round trip, CUBIC growth on success, as botocore's adaptive mode does
for requests) unless the user fixed it (``BEDROCK_HOOKS_QUOTAS``).

Why pure and flat: the same functions run in process (``ratelimit``, under a lock) and for a fleet in
a shared store (Redis, ported to Lua), and the two must agree on any sequence of calls. So there is
no hidden state: no clock read, no thread identity, no object; time comes in as ``now`` (and the
send time of the answered attempt as ``sent_at``), and each function returns a *new* dict.

State fields (every value a float; "never" is :data:`NEVER`, a finite number Lua and JSON can hold):

    born          clock time the state was made (``new_state``)
    engaged       1.0 while pacing, else 0.0 (always 1.0 with a fixed rate)
    rate          allowed units/s while engaged (units: tokens, or requests for non-model scopes)
    tat           GCRA theoretical arrival time; the level (units booked, not yet drained) is
                  ``max(0, tat - now) * rate``; a send is admitted while ``tat - burst <= now``
    w_max, k      CUBIC: the rate before the last cut, and the seconds CUBIC takes to regain it
    last_cut      clock time of the last rate cut (or engagement): a throttle for a request sent
                  before it says nothing new
    last_throttle clock time of the last throttling answer
    cost_avg      moving average (1/8 weight) of reserved costs: scales the floor and CUBIC's curve
    win_start     start of the meter's current window (``config.window`` seconds long)
    sent, sent_prev   units booked (reserve + settle) in the current / previous window
    resp, resp_prev   answers observed in the current / previous window
    thr, thr_prev     throttling answers in the current / previous window
    throttles, reductions  counters (diagnostics): throttling answers seen, rate cuts made

Operations (``config`` is a :class:`PacingConfig`; all return ``(new_state, result)``):

    reserve(state, cost, now, max_wait, config) -> (state, wait)
        Disengages first when ``reset_after`` seconds passed since the last throttle (learned rate
        only). Not engaged: books ``cost`` in the meter only and returns 0.0. Engaged: the slot is
        ``max(tat - burst, now)``; ``wait = min(slot - now, max_wait)``; ``tat = max(tat, now) +
        cost / rate`` (FIFO: a later request gets a later slot). Also updates ``cost_avg`` and books
        ``cost`` in the meter. The caller sleeps ``wait``, then sends.
    settle(state, delta, now, config) -> (state, shift)
        ``delta`` = real usage minus what was reserved for the request (a request that reserved
        nothing settles its whole usage). Books ``delta`` in the meter; moves ``tat`` by
        ``delta / rate`` from ``max(tat, now)``, never below ``now`` (refunds do not bank credit).
        ``shift`` is the seconds ``tat`` moved. Throttled requests are not settled: the server
        admitted nothing, but their reservation stands as back-pressure, as botocore counts a
        throttled send as sent.
    observe(state, throttled, sent_at, now, config) -> (state, rate)
        Counts the answer. A success grows a learned rate along CUBIC; growth stops at
        ``max_rate_factor`` x the measured rate (a lull in demand never lowers the rate: the scope's
        clients come and go, and the rate is the quota's, not one client's). A throttle: not engaged, engages when the scope is
        under pressure (observed ``min_observed`` s, ``min_sample`` answers in the window, at least
        ``engage_share`` of them throttled), at ``beta`` x the measured rate, level full (``tat =
        now + burst``: the server just said it has nothing left). Engaged and ``sent_at >=
        last_cut`` (sent after the last cut: a fresh verdict): the level is set full again, and a
        learned rate under pressure is cut to ``beta`` x ``anchor(rate)``, at most once per
        ``window`` seconds unless the rate is above the delivered one. The anchor of an upper bound ``u`` is ``min(u, max(delivered, beta**2 x
        u))``: what the server *delivered* (successful answers x ``cost_avg`` per second over the
        window: under saturation that is the quota itself, where what was *sent* also counts the
        throttled requests), but at most ``beta**2`` below ``u`` (a 429 during a lull in sending says
        the server is still full, not that the rate was a hundred times too high). Engaging uses the
        anchor of the measured rate. Why once per window: right after a cut the server is still
        empty (the level was just full), so the next 429s judge the old rate, not the new one; cutting
        on each of them took a storm's rate to the floor within a second.
        Returns the rate (0.0 when not engaged).
    quiet(state, now, config) -> bool
        Nothing to remember: no throttle, booking or creation within ``reset_after`` seconds.

Units: a model scope counts tokens (``bedrock_hooks.tokens`` estimates them), any other scope counts
requests (cost 1.0); the floor is ``min_rate`` requests/s, i.e. ``min_rate * cost_avg`` units/s.
"""

from __future__ import annotations

import math
from typing import NamedTuple

#: "Never happened": finite, so the state survives JSON and Lua (which cannot read "-inf" back).
NEVER = -1e18

State = dict[str, float]

FIELDS: tuple[str, ...] = (
    "born", "engaged", "rate", "tat", "w_max", "k", "last_cut", "last_throttle", "cost_avg",
    "win_start", "sent", "sent_prev", "resp", "resp_prev", "thr", "thr_prev", "throttles", "reductions",
)


class PacingConfig(NamedTuple):
    """The constants of one scope's pacing (every value a float, so a store can pass them as arguments)."""

    fixed_rate: float = 0.0  #: units/s set by the user (BEDROCK_HOOKS_QUOTAS); 0.0: learned from throttling
    burst: float = 1.0  #: seconds of rate a full level holds (GCRA tolerance; a quota per minute: 60)
    beta: float = 0.7  #: multiplicative decrease on throttling (botocore adaptive: 0.7)
    scale: float = 0.4  #: CUBIC scale, requests/s per s^3 (botocore adaptive: 0.4), times cost_avg
    min_rate: float = 0.5  #: floor, requests/s (botocore adaptive: 0.5), times cost_avg
    max_rate_factor: float = 2.0  #: a learned rate never exceeds this multiple of the measured rate
    window: float = 1.0  #: seconds of the meter's window
    engage_share: float = 0.2  #: share of the window's answers that must be throttling to engage or cut
    min_sample: float = 20.0  #: answers in the window needed before a share means anything
    min_observed: float = 0.9  #: seconds a state watches before it judges pressure
    reset_after: float = 20.0  #: seconds without throttling after which a learned rate disengages
    #: Growth past CUBIC's plateau, as a share of ``w_max`` per second (0.0: CUBIC's own convex growth). A
    #: quota is a fixed number: once the rate is back at the level that last held, probing above it
    #: quickly only buys 429s. With a probe, a lone fresh 429 (no pressure) also ends the probe: the rate
    #: and the level that held go to :data:`PROBE_BACK` seconds of probe growth under the lower of the two
    #: (see :func:`observe`).
    probe: float = 0.0


DEFAULT = PacingConfig()

#: A lone fresh 429 (no pressure) of a probing scope lowers the level that held by this many seconds of
#: probe growth: the probe finds the quota again in that time, so lone 429s come about that far apart.
PROBE_BACK = 3.0


def new_state(now: float, config: PacingConfig = DEFAULT) -> State:
    """A scope's first state: engaged at once (level empty) with a fixed rate, else idle."""
    fixed = config.fixed_rate > 0
    return {
        "born": now, "engaged": 1.0 if fixed else 0.0, "rate": config.fixed_rate if fixed else 0.0,
        "tat": now, "w_max": 0.0, "k": 0.0, "last_cut": NEVER, "last_throttle": NEVER, "cost_avg": 0.0,
        "win_start": now, "sent": 0.0, "sent_prev": 0.0, "resp": 0.0, "resp_prev": 0.0, "thr": 0.0,
        "thr_prev": 0.0, "throttles": 0.0, "reductions": 0.0,
    }


# -- the meter: two windows, the previous one weighted by how much of it still overlaps ------------

def _roll(s: State, now: float, window: float) -> None:
    """Start a new window when the current one is over (in place, on the copy being built)."""
    elapsed = now - s["win_start"]
    if elapsed < window:
        return
    if elapsed < 2 * window:
        s["sent_prev"], s["resp_prev"], s["thr_prev"] = s["sent"], s["resp"], s["thr"]
        s["win_start"] += window
    else:
        s["sent_prev"] = s["resp_prev"] = s["thr_prev"] = 0.0
        s["win_start"] = now
    s["sent"] = s["resp"] = s["thr"] = 0.0


def _windowed(s: State, now: float, window: float, name: str) -> float:
    """Events of kind ``name`` over the last ``window`` seconds (previous window pro rata)."""
    overlap = max(0.0, 1.0 - (now - s["win_start"]) / window)
    return s[name] + s[name + "_prev"] * overlap


def _span(state: State, now: float, config: PacingConfig) -> float:
    """Seconds the meter's windows cover now: a window, or the state's age if younger (at least a tenth)."""
    return min(config.window, max(0.1 * config.window, now - state["born"]))


def measured_rate(state: State, now: float, config: PacingConfig = DEFAULT) -> float:
    """Units/s booked over the last window (or since the state was made, if younger)."""
    return max(0.0, _windowed(state, now, config.window, "sent")) / _span(state, now, config)


def throttled_share(state: State, now: float, config: PacingConfig = DEFAULT) -> float:
    """Share of the last window's answers that were throttling."""
    answers = _windowed(state, now, config.window, "resp")
    return _windowed(state, now, config.window, "thr") / answers if answers > 0 else 0.0


def delivered_rate(state: State, now: float, config: PacingConfig = DEFAULT) -> float:
    """Units/s the server admitted over the last window: successful answers x the average booked cost."""
    successes = _windowed(state, now, config.window, "resp") - _windowed(state, now, config.window, "thr")
    return max(0.0, successes) * max(state["cost_avg"], 1.0) / _span(state, now, config)


def _anchor(s: State, now: float, upper: float, config: PacingConfig) -> float:
    """The base of a cut: the delivered rate, never above ``upper`` and at most ``beta**2`` below it."""
    return min(upper, max(delivered_rate(s, now, config), config.beta * config.beta * upper))


def _pressure(s: State, now: float, config: PacingConfig) -> bool:
    """Quota pressure, not noise: watched long enough, enough answers, a large share of them 429s."""
    return (now - s["born"] >= config.min_observed
            and _windowed(s, now, config.window, "resp") >= config.min_sample
            and throttled_share(s, now, config) >= config.engage_share)


def _floor(s: State, config: PacingConfig) -> float:
    return config.min_rate * max(s["cost_avg"], 1.0)


# -- operations -----------------------------------------------------------------------------------

def reserve(state: State, cost: float, now: float, max_wait: float, config: PacingConfig = DEFAULT
            ) -> tuple[State, float]:
    """Book ``cost`` units for a request about to be sent; the seconds to wait before sending it."""
    s = dict(state)
    _roll(s, now, config.window)
    cost = max(0.0, cost)
    s["cost_avg"] = cost if s["cost_avg"] <= 0 else s["cost_avg"] + (cost - s["cost_avg"]) / 8.0
    if s["engaged"] and config.fixed_rate <= 0 and now - s["last_throttle"] > config.reset_after:
        s["engaged"], s["rate"] = 0.0, 0.0
    wait = 0.0
    if s["engaged"] and s["rate"] > 0:
        slot = max(s["tat"] - config.burst, now)
        wait = max(0.0, min(slot - now, max_wait))
        # a send whose wait is capped goes at now + wait: booked there, not behind a schedule it cannot keep
        # (else the schedule runs away from the sends, and every later one waits the cap: a fleet stalled)
        s["tat"] = min(max(s["tat"], now) + cost / s["rate"], now + wait + config.burst + cost / s["rate"])
    s["sent"] += cost
    return s, wait


def settle(state: State, delta: float, now: float, config: PacingConfig = DEFAULT) -> tuple[State, float]:
    """Book the difference between a request's real usage and its reservation."""
    s = dict(state)
    _roll(s, now, config.window)
    s["sent"] += delta
    shift = 0.0
    if s["engaged"] and s["rate"] > 0:
        start = max(s["tat"], now)
        s["tat"] = max(now, start + delta / s["rate"])
        shift = s["tat"] - start
    return s, shift


def observe(state: State, throttled: bool, sent_at: float, now: float, config: PacingConfig = DEFAULT
            ) -> tuple[State, float]:
    """Learn from one answer; ``sent_at`` is when its request was reserved (:data:`NEVER`: unknown)."""
    s = dict(state)
    _roll(s, now, config.window)
    s["resp"] += 1.0
    fixed = config.fixed_rate > 0
    if not throttled:
        if s["engaged"] and not fixed:
            _grow(s, now, config)
        return s, s["rate"] if s["engaged"] else 0.0
    s["thr"] += 1.0
    s["throttles"] += 1.0
    s["last_throttle"] = now
    if not s["engaged"]:
        if _pressure(s, now, config):
            s["engaged"] = 1.0
            _cut(s, now, _anchor(s, now, measured_rate(s, now, config), config), config)
            s["tat"] = now + config.burst
        return s, s["rate"] if s["engaged"] else 0.0
    if sent_at >= s["last_cut"]:  # sent after the last cut: a fresh verdict on the current rate
        s["tat"] = max(s["tat"], now + config.burst)
        if fixed:
            s["last_cut"] = now
        elif _pressure(s, now, config) and (now - s["last_cut"] >= config.window
                                            or s["rate"] > delivered_rate(s, now, config)):
            _cut(s, now, _anchor(s, now, s["rate"], config), config)
        elif config.probe > 0:  # a lone 429: the level that held is a little too high, or a probe above it failed
            s["w_max"] = s["rate"] = max(_floor(s, config), min(s["rate"], s["w_max"]) * (1.0 - PROBE_BACK * config.probe))
            s["k"], s["last_cut"] = 0.0, now
    return s, s["rate"]


def quiet(state: State, now: float, config: PacingConfig = DEFAULT) -> bool:
    """Nothing worth remembering: no throttle, booking or creation within ``reset_after`` seconds."""
    return now - max(state["last_throttle"], state["born"], state["tat"]) > config.reset_after


# -- CUBIC ------------------------------------------------------------------------------------------

def _cut(s: State, now: float, base: float, config: PacingConfig) -> None:
    floor = _floor(s, config)
    base = max(base, floor)
    scale = config.scale * max(s["cost_avg"], 1.0)
    s["w_max"] = base
    s["k"] = (base * (1.0 - config.beta) / scale) ** (1.0 / 3.0)
    s["rate"] = max(floor, base * config.beta)
    s["last_cut"] = now
    s["reductions"] += 1.0


def _grow(s: State, now: float, config: PacingConfig) -> None:
    scale = config.scale * max(s["cost_avg"], 1.0)
    floor = _floor(s, config)
    past = now - s["last_cut"] - s["k"]
    cubic = scale * past ** 3 + s["w_max"]
    if config.probe > 0 and past > 0:
        cubic = min(cubic, s["w_max"] * (1.0 + config.probe * past))
    ceiling = config.max_rate_factor * max(delivered_rate(s, now, config), floor)
    rate = max(floor, min(cubic, max(ceiling, s["rate"])))  # the ceiling stops growth; it never cuts
    s["rate"] = rate if math.isfinite(rate) else floor
