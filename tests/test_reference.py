"""The generated reference tables: a message pattern is shown by its first whole alternative."""

from bedrock_hooks.catalog import ENTRIES
from bedrock_hooks.reference import catalog_table, recognised_by, top_level_alternatives


def test_alternatives_split_only_at_top_level_bars():
    assert top_level_alternatives("a (b|c)|d") == ["a (b|c)", "d"]
    assert top_level_alternatives(r"x\|y|[|]z") == [r"x\|y", "[|]z"]
    assert top_level_alternatives("plain") == ["plain"]


def test_every_shown_pattern_is_balanced():
    for entry in ENTRIES:
        shown = recognised_by(entry)
        assert shown.count("(") == shown.count(")"), (entry.name, shown)


def test_markdown_rows_keep_five_cells():
    for row in catalog_table().splitlines():
        cells = row.replace("\\|", "").strip("|").split("|")
        assert len(cells) == 5, row
