"""docs/observability.md lists every instrument with its unit and attributes, and every log field: the tables
are generated from telemetry's data and compared here, so the page cannot drift from what is recorded."""

from __future__ import annotations

import pathlib

from bedrock_hooks import telemetry

DOC = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()


def test_every_instrument_is_documented_with_its_unit_and_attributes():
    assert telemetry.instruments_table() in DOC
    for instrument in telemetry.INSTRUMENTS:
        assert f"`{instrument.name}`" in DOC and f"`{instrument.unit}`" in DOC


def test_every_log_field_and_span_event_is_documented():
    assert telemetry.log_fields_table() in DOC
    for event in telemetry.SPAN_EVENTS:
        assert f"`{event}`" in DOC


def test_every_attribute_key_has_its_values_described():
    keys = {key for instrument in telemetry.INSTRUMENTS for key in instrument.attributes}
    values_table = DOC.split("Attribute values:", 1)[1].split("###", 1)[0]
    for key in keys:
        assert f"`{key}`" in values_table, key
