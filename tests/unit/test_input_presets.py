"""--input_preset's fields, and explicit --text_field/--key_field/--url_field winning over them (README)."""

from __future__ import annotations

import pytest

from transforms.formats.layout import InputError, preset_fields

NONE_GIVEN = {"text_field": None, "key_field": None, "url_field": None}


def test_the_presets_name_their_columns():
    assert preset_fields("datacomp", "parquet", ["uid", "url", "text"], NONE_GIVEN) == {
        "text_field": "text",
        "key_field": "uid",
        "url_field": "url",
    }
    assert preset_fields("img2dataset", "parquet", ["URL", "TEXT"]) == {
        "text_field": "TEXT",
        "key_field": None,
        "url_field": "URL",
    }


def test_explicit_fields_win_and_their_preset_columns_need_not_exist():
    # The two command lines: a url,text pool with img2dataset; uid,url,caption with datacomp.
    given = {**NONE_GIVEN, "text_field": "text", "url_field": "url"}
    assert preset_fields("img2dataset", "parquet", ["url", "text"], given) == {
        "text_field": "text",
        "key_field": None,
        "url_field": "url",
    }
    given = {**NONE_GIVEN, "text_field": "caption"}
    assert preset_fields("datacomp", "parquet", ["uid", "url", "caption"], given) == {
        "text_field": "caption",
        "key_field": "uid",
        "url_field": "url",
    }
    # Webdataset shards: the flag wins there too.
    assert preset_fields("datacomp", "webdataset", [], {**NONE_GIVEN, "key_field": "id"})["key_field"] == "id"


@pytest.mark.parametrize(
    "preset, columns, given, message",
    [
        ("datacomp", ["uid", "caption"], {}, "needs the columns uid, url and text; url, text missing"),
        ("datacomp", ["uid", "caption"], {"text_field": "caption"}, "needs the columns uid and url; url missing"),
        ("img2dataset", ["url", "text"], {"url_field": "url"}, "needs the columns url and caption"),
        ("img2dataset", ["link", "text"], {"text_field": "text"}, "needs the columns url and caption"),
    ],
)
def test_a_preset_column_no_flag_replaces_must_be_there(preset, columns, given, message):
    with pytest.raises(InputError, match=message):
        preset_fields(preset, "parquet", columns, {**NONE_GIVEN, **given})
