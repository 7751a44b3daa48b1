"""The pacing algorithm (bedrock_hooks/pacing.py): pure functions of a flat state, time passed in.

Nothing here sleeps or reads a clock: every call gets ``now``. The same sequences must give the same
states whether the state stays a dict or goes through JSON (as a shared store keeps it).
"""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from bedrock_hooks import pacing
from bedrock_hooks.pacing import NEVER, PacingConfig, new_state, observe, reserve, settle

COST = 1000.0  #: tokens a request reserves in these tests
T0 = 1000.0


def storm(state: pacing.State, now: float, *, answers: int = 25, every: int = 1, span: float = 1.0,
          config: PacingConfig = pacing.DEFAULT) -> tuple[pacing.State, float]:
    """``answers`` requests over ``span`` seconds, every ``every``-th throttled (1: all), each reserved then
    answered at once; the successes settle a quarter of their reservation."""
    for i in range(answers):
        state, _ = reserve(state, COST, now, math.inf, config)
        throttled = i % every == 0
        if not throttled:
            state, _ = settle(state, -0.75 * COST, now, config)
        state, _ = observe(state, throttled, now, now, config)
        now += span / answers
    return state, now


def engaged_state() -> tuple[pacing.State, float]:
    state, now = storm(new_state(T0), T0)
    assert state["engaged"] == 1.0
    return state, now


def test_a_new_state_is_idle_flat_and_only_meters():
    state = new_state(T0)
    assert set(state) == set(pacing.FIELDS) and all(isinstance(v, float) for v in state.values())
    after, wait = reserve(state, COST, T0, math.inf)
    assert wait == 0.0 and after["engaged"] == 0.0 and after["sent"] == COST
    assert state["sent"] == 0.0  # the input is never changed: each function returns a new dict


def test_scattered_throttles_among_successes_do_not_engage():
    """A noisy fault mix (one answer in ten a 429) is left to backoff."""
    state, now = storm(new_state(T0), T0, answers=60, every=10, span=1.5)
    assert state["engaged"] == 0.0 and state["throttles"] == 6


def test_a_young_state_does_not_judge_a_fraction_of_a_second():
    state, _ = storm(new_state(T0), T0, answers=25, span=0.5)
    assert state["engaged"] == 0.0 and pacing.throttled_share(state, T0 + 0.5) == 1.0


def test_a_storm_engages_at_beta_times_the_measured_rate_with_the_level_full():
    state, now = storm(new_state(T0), T0, answers=25, every=2)  # half throttled
    assert state["engaged"] == 1.0 and state["reductions"] >= 1
    assert state["rate"] == pytest.approx(pacing.DEFAULT.beta * state["w_max"])
    # engaged when the first ~23 answers were in: ~12 throttled (full cost) + ~11 settled to a quarter
    assert 10 * COST <= state["w_max"] <= 20 * COST
    assert state["tat"] >= state["last_cut"] + pacing.DEFAULT.burst - 1e-9  # nothing left: the server said so


def test_engaged_sends_are_spaced_cost_over_rate_apart_fifo():
    state, now = engaged_state()
    state["tat"] = now + pacing.DEFAULT.burst  # level exactly full
    interval = COST / state["rate"]
    waits = []
    for _ in range(5):
        state, wait = reserve(state, COST, now, math.inf)
        waits.append(wait)
    assert waits == pytest.approx([0.0, interval, 2 * interval, 3 * interval, 4 * interval])


def test_an_empty_level_admits_a_burst_of_burst_seconds_of_rate():
    config = PacingConfig(fixed_rate=10 * COST, burst=2.0)  # 10 requests/s, a level of 20 requests
    state, now = new_state(T0, config), T0
    waits = []
    for _ in range(25):
        state, wait = reserve(state, COST, now, math.inf, config)
        waits.append(wait)
    assert waits == pytest.approx([0.0] * 21 + [0.1, 0.2, 0.3, 0.4], abs=1e-9)


def test_the_wait_is_capped():
    state, now = engaged_state()
    waits = []
    for _ in range(50):
        state, wait = reserve(state, COST, now, 0.25)
        waits.append(wait)
    assert max(waits) == 0.25


def test_settle_refunds_move_the_schedule_back_but_never_bank_credit():
    config = PacingConfig(fixed_rate=COST, burst=1.0)  # one request/s
    state = new_state(T0, config)
    for _ in range(3):
        state, _ = reserve(state, COST, T0, math.inf, config)
    assert state["tat"] == pytest.approx(T0 + 3.0)
    state, shift = settle(state, -0.5 * COST, T0, config)  # a request used half its reservation
    assert shift == pytest.approx(-0.5) and state["tat"] == pytest.approx(T0 + 2.5)
    state, shift = settle(state, -100 * COST, T0, config)  # a huge refund: the level is empty, not negative
    assert state["tat"] == T0 and shift == pytest.approx(-2.5)
    state, wait = reserve(state, COST, T0, math.inf, config)
    state, wait2 = reserve(state, COST, T0, math.inf, config)
    state, wait3 = reserve(state, COST, T0, math.inf, config)
    assert (wait, wait2, wait3) == (0.0, 0.0, pytest.approx(1.0))  # burst of 1 s of rate, then paced
    state, shift = settle(state, 2 * COST, T0, config)  # used more than reserved: later slots
    assert shift == pytest.approx(2.0)


def test_a_throttle_cuts_at_most_once_per_round_trip():
    state, now = engaged_state()
    cuts, rate = state["reductions"], state["rate"]
    state, _ = observe(state, True, state["last_cut"] - 0.01, now, pacing.DEFAULT)  # sent before the last cut
    assert state["reductions"] == cuts and state["rate"] == rate
    state, _ = observe(state, True, state["last_cut"] + 0.001, now + 0.01, pacing.DEFAULT)  # sent after it
    assert state["reductions"] == cuts + 1 and state["rate"] < rate
    assert state["rate"] == pytest.approx(max(pacing._floor(state, pacing.DEFAULT),
                                              pacing.DEFAULT.beta * state["w_max"]))


def test_successes_grow_the_rate_back_along_cubic_capped_by_the_measured_rate():
    state, now = engaged_state()
    cut = state["rate"]
    for _ in range(400):
        state, wait = reserve(state, COST, now, math.inf)
        now += max(wait, COST / state["rate"])
        state, _ = observe(state, False, now, now, pacing.DEFAULT)
    assert state["rate"] > cut
    ceiling = pacing.DEFAULT.max_rate_factor * max(pacing.measured_rate(state, now), pacing._floor(state, pacing.DEFAULT))
    assert state["rate"] <= ceiling + 1e-6


def test_the_rate_never_falls_below_the_floor_of_min_rate_requests():
    state, now = engaged_state()
    for _ in range(60):
        state, _ = reserve(state, COST, now, math.inf)
        now += 0.001
        state, _ = observe(state, True, now, now, pacing.DEFAULT)
    assert state["rate"] >= pacing.DEFAULT.min_rate * COST * 0.99


def test_a_learned_rate_disengages_after_a_quiet_period_and_a_state_is_forgotten_when_nothing_is_booked():
    state, now = engaged_state()
    now = max(now, state["tat"]) + pacing.DEFAULT.reset_after + 1  # after the schedule booked ahead, too
    state, wait = reserve(state, COST, now, math.inf)
    assert wait == 0.0 and state["engaged"] == 0.0 and state["rate"] == 0.0
    assert pacing.quiet(state, now)  # unthrottled for reset_after: forgotten, the idle path is free again
    fixed = PacingConfig(fixed_rate=COST, burst=1.0)
    booked, _ = reserve(new_state(now, fixed), 100 * COST, now, 0.0, fixed)  # 100 s booked ahead
    assert not pacing.quiet(booked, now + 50, fixed) and pacing.quiet(booked, now + 100 + pacing.DEFAULT.reset_after + 1, fixed)


def test_a_fixed_rate_is_engaged_from_the_start_and_throttles_never_change_it():
    config = PacingConfig(fixed_rate=500.0, burst=60.0)
    state = new_state(T0, config)
    assert state["engaged"] == 1.0 and state["rate"] == 500.0
    state, now = storm(state, T0, answers=40, config=config)
    assert state["rate"] == 500.0 and state["reductions"] == 0
    assert state["tat"] >= now - 1.0 + 60.0 - 1e-6  # each fresh 429 says the server's level is full
    state, _ = reserve(state, COST, now + 100, math.inf, config)
    assert state["engaged"] == 1.0


def test_a_throttle_for_a_request_sent_before_the_last_fixed_rate_sync_does_not_push_again():
    config = PacingConfig(fixed_rate=500.0, burst=60.0)
    state, _ = observe(new_state(T0, config), True, T0, T0, config)
    synced = state["tat"]
    state, _ = observe(state, True, T0 - 1, T0 + 5, config)  # sent before: stale
    assert state["tat"] == synced


# -- properties a shared store relies on --------------------------------------------------------------

OPERATIONS = st.lists(st.tuples(st.sampled_from(["reserve", "settle", "ok", "throttle"]),
                                st.floats(0, 3), st.floats(0, 5000)), min_size=1, max_size=200)


def run(ops, through_json: bool, config: PacingConfig = pacing.DEFAULT) -> list:
    state, now, results = new_state(T0, config), T0, []
    for kind, dt, amount in ops:
        now += dt
        if through_json:
            state = json.loads(json.dumps(state))
        if kind == "reserve":
            state, result = reserve(state, amount, now, 20.0, config)
        elif kind == "settle":
            state, result = settle(state, amount - 2500, now, config)
        else:
            state, result = observe(state, kind == "throttle", now - dt / 2, now, config)
        results.append((result, dict(state)))
    return results


@settings(max_examples=150, deadline=None)
@given(ops=OPERATIONS, fixed=st.sampled_from([0.0, 800.0]))
def test_any_sequence_keeps_a_flat_finite_state_and_bounded_waits(ops, fixed):
    config = PacingConfig(fixed_rate=fixed, burst=60.0 if fixed else 1.0)
    for (kind, _dt, _amount), (result, state) in zip(ops, run(ops, False, config)):
        assert set(state) == set(pacing.FIELDS)
        assert all(isinstance(v, float) and math.isfinite(v) for v in state.values())
        assert math.isfinite(result)
        if kind == "reserve":
            assert 0.0 <= result <= 20.0
        if state["engaged"]:
            assert state["rate"] > 0


@settings(max_examples=60, deadline=None)
@given(ops=OPERATIONS)
def test_a_state_kept_as_json_gives_the_same_results(ops):
    assert run(ops, True) == run(ops, False)


def test_random_traffic_is_deterministic():
    rng = random.Random(3)
    ops = [(rng.choice(["reserve", "settle", "ok", "throttle", "throttle"]), rng.random() / 20, rng.random() * 4000)
           for _ in range(2000)]
    first, second = run(ops, False), run(ops, False)
    assert first == second and any(state["engaged"] for _, state in first)
    assert NEVER < -1e17


def test_a_lull_in_sending_never_lowers_the_rate():
    """Regression: growth was capped at 2x the measured rate, so a second without sends (clients
    between batches, the end of a run) collapsed a learned rate to the floor, and the next requests
    crawled at 0.5 requests/s."""
    state, now = engaged_state()
    rate = state["rate"]
    now += 1.5  # nothing booked for longer than the meter's window
    state, _ = observe(state, False, now, now, pacing.DEFAULT)
    assert pacing.measured_rate(state, now) == 0.0 and state["rate"] >= rate


def test_one_cut_lowers_the_rate_by_at_most_beta_cubed():
    """Regression: a 429 answered during a lull (the server still full from earlier sends) cut to
    beta x the near-zero measured rate: the floor, at once. The cut's base (the delivered rate) is now
    at most beta**2 below the rate, so one cut lowers it by at most beta**3."""
    state, now = engaged_state()
    rate = state["rate"]
    now += 1.5
    for _ in range(25):  # answers to requests booked long ago: pressure, but nothing measured
        state, _ = observe(state, True, NEVER, now, pacing.DEFAULT)
        now += 0.01
    state, _ = observe(state, True, state["last_cut"] + 0.001, now, pacing.DEFAULT)  # one fresh verdict
    beta = pacing.DEFAULT.beta
    assert state["rate"] == pytest.approx(beta ** 3 * rate)


def test_fresh_429s_within_a_window_of_a_cut_do_not_cascade_below_the_delivered_rate():
    """Regression (fleet storm, 2026-12-02): every fresh 429 under pressure cut by beta, so the 429s a
    storm's own past left in the server took a learned rate from the quota to the floor within a second
    (then CUBIC overshot the credit the server banked meanwhile). Now a cut within a window of the last
    one needs the rate to be above what the server delivered."""
    state, now = engaged_state()
    state["rate"] = 0.5 * pacing.delivered_rate(state, now)  # the rate is already under the delivered one
    rate, cuts = state["rate"], state["reductions"]
    for i in range(10):  # ten fresh verdicts 10 ms apart, all 429 (the server still empty)
        state, _ = observe(state, True, state["last_cut"] + 0.001, now + 0.01 * (i + 1), pacing.DEFAULT)
    assert state["reductions"] == cuts and state["rate"] == rate


def test_a_probing_scope_grows_linearly_past_the_level_that_held_and_steps_back_on_a_lone_429():
    config = PacingConfig(burst=60.0, min_observed=0.3, probe=0.01)
    state, now = engaged_state()
    state.update(w_max=10 * COST, rate=10 * COST, k=0.0, last_cut=now)
    for _ in range(200):  # 10 s of successes, 20 a second (the server delivers 2x the rate: no ceiling)
        now += 0.05
        state, _ = reserve(state, COST, now, 0.0, config)
        state, _ = observe(state, False, now, now, config)
    assert state["rate"] == pytest.approx(10 * COST * 1.10)  # +1 % of the level per second, not CUBIC's t^3
    state, _ = observe(state, True, now, now + 0.01, config)  # one fresh 429, no pressure
    assert state["rate"] == state["w_max"] == pytest.approx(10 * COST * (1 - pacing.PROBE_BACK * 0.01))
    assert state["last_cut"] == now + 0.01


def test_a_send_whose_wait_is_capped_is_booked_when_it_goes_not_behind_the_schedule():
    """Regression (fleet storm, 8 processes): with the rate briefly at its floor, 64 clients' bookings
    pushed the schedule minutes ahead; every later send then waited the cap (20 s) and went anyway, while
    each booking pushed the schedule further: the fleet stalled at 42 % of the quota. A capped send goes
    at now + cap, and is booked there."""
    config = PacingConfig(fixed_rate=10.0, burst=1.0)  # 10 units/s
    state, now = new_state(T0, config), T0
    for _ in range(500):  # 50 s of bookings at once
        state, wait = reserve(state, 1.0, now, 5.0, config)
    assert wait == 5.0  # capped
    assert state["tat"] <= now + 5.0 + config.burst + 0.1 + 1e-9  # the schedule is where the sends are
    later = now + 6.0  # once the capped sends went, a new one waits at most the rest of the queue
    state, wait = reserve(state, 1.0, later, 5.0, config)
    assert wait == pytest.approx(0.0, abs=0.2)
