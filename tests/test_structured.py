"""Structured LLM output: extraction, validation, coercion and the repair prompt."""

import pytest

from halo import types
from halo.runtime import structured

T = types.struct([("region", types.TEXT), ("year", types.INT), ("share", types.FLOAT), ("ok", types.BOOL)])


@pytest.mark.parametrize(
    "text",
    [
        '{"region": "ASIA", "year": 1994, "share": 0.5, "ok": true}',
        'Sure!\n```json\n{"region": "ASIA", "year": "1994", "share": 1, "ok": "true"}\n```',
        'The answer is {"region": "ASIA", "year": 1994.0, "share": "0.5", "ok": false} as requested.',
    ],
)
def test_finds_and_coerces_the_object(text):
    got = structured.parse(text, T)
    assert got["region"] == "ASIA" and got["year"] == 1994 and isinstance(got["share"], float)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("no json here", "no JSON object"),
        ('{"region": "ASIA", "share": 1, "ok": true}', "lacks field 'year'"),
        ('{"region": "ASIA", "year": 19.5, "share": 1, "ok": true}', "'year' is not int"),
        ('{"region": "ASIA", "year": 1, "share": "x", "ok": true}', "'share' is not float"),
        ('{"region": "ASIA", "year": 1, "share": 1, "ok": "maybe"}', "'ok' is not bool"),
    ],
)
def test_rejects_what_does_not_fit(text, reason):
    with pytest.raises(structured.OutputError, match=reason):
        structured.parse(text, T)


def test_schema_and_repair_prompt_name_every_field():
    schema = types.json_schema(T)
    assert schema["required"] == ["region", "year", "share", "ok"]
    assert schema["properties"]["year"] == {"type": "integer"}
    assert types.json_schema(types.TEXT) is None
    prompt = structured.repair_prompt("Q?", T, "reply lacks field 'year'")
    assert prompt.startswith("Q?") and '"year": <int>' in prompt and "lacks field" in prompt
