"""``bedrock-hooks doctor``: its sections are data, and the compatibility table is one of them."""

from __future__ import annotations

import dataclasses

import pytest

from bedrock_hooks import compat, doctor


@pytest.fixture
def fresh_compat():
    compat.reset()
    yield
    compat.reset()


def test_doctor_prints_the_compatibility_table(fresh_compat):
    rows = [c for c in doctor.doctor({}, sections=[doctor.check_compatibility])]
    assert [c.name for c in rows] == [check.internal for check in compat.CHECKS]
    assert {c.section for c in rows} == {"compatibility"}
    # ok where this botocore has the internal (which ones it lacks is pinned by tests/test_compat.py);
    # info for an async library's internals where that library is not installed (not probed)
    assert [c.status for c in rows] == ["info" if row.pending else "ok" if row.ok else "warn"
                                        for row in compat.report()]
    assert "\nCompatibility\n  [ok]   " in doctor.render_checks(rows)


def test_doctor_names_the_feature_a_missing_internal_turns_off(fresh_compat, monkeypatch):
    def gone() -> bool:
        raise AttributeError("'RequestSigner' object has no attribute '_credentials'")

    broken = tuple(dataclasses.replace(c, probe=gone) if c.internal.endswith("RequestSigner._credentials") else c
                   for c in compat.CHECKS)
    monkeypatch.setattr(compat, "CHECKS", broken)
    rows = {c.name: c for c in doctor.doctor({}, sections=[doctor.check_compatibility])}
    row = rows["botocore.signers.RequestSigner._credentials"]
    assert row.status == "warn" and "AttributeError" in row.detail
    assert compat.FEATURES[compat.REFRESH_CREDENTIALS].does in row.detail


def test_doctor_sections_run_in_order_with_one_context():
    seen = []

    def first(context: doctor.Context) -> list[doctor.Check]:
        seen.append(context)
        return [doctor.Check("first", "a", "ok", "x")]

    def second(context: doctor.Context) -> list[doctor.Check]:
        seen.append(context)
        return [doctor.Check("second", "b", "fail", "y")]

    checks = doctor.doctor({"BEDROCK_HOOKS_MAX_ATTEMPTS": "3"}, sections=[first, second])
    assert [c.section for c in checks] == ["first", "second"]
    assert seen[0] is seen[1] and seen[0].settings.max_attempts == 3
    assert doctor.render_checks(checks).endswith("1 problem(s), 0 warning(s).")
