"""Batch loading under hostile input: a bad row is a RowError with its number, a bad file a located HaloError
before any row, and never an exception escaping `iter_rows` (JSONL, CSV, Parquet)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halo import batch
from halo.errors import HaloError
from halo.parser import parse

PARAMS = (
    parse(
        "workflow w(ticket: text, ratio: float = 0.5, limit: int = 5, tags: text[] = [], "
        "extra: json = null) { return ticket }"
    )
    .workflows[0]
    .params
)


def jsonl(tmp_path: Path, lines: list[bytes | str]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def reasons(b: batch.Batch) -> dict[int, str]:
    return {e.row: e.reason for e in b.errors}


def nested(depth: int) -> str:
    """A row whose `extra` value nests so that the row reaches `depth` levels (the row object is level 1)."""
    inner = depth - 1
    return '{"ticket": "x", "extra": ' + "[" * inner + "]" * inner + "}"


# --- JSONL ----------------------------------------------------------------------------------------------------


def test_jsonl_hostile_rows_are_rejected_one_by_one(tmp_path):
    ok = '{"ticket": "ok"}'
    path = jsonl(
        tmp_path,
        [
            ok,
            nested(1000),  # json.loads alone raises RecursionError here
            nested(batch.MAX_DEPTH + 1),
            nested(batch.MAX_DEPTH),
            '{"ticket": "x", "extra": ' + "1" * 5000 + "}",  # int() alone raises ValueError (4,300 digits)
            '{"ticket": "x", "extra": -' + "9" * (batch.MAX_INT_DIGITS + 1) + "}",
            '{"ticket": "x", "extra": ' + "9" * batch.MAX_INT_DIGITS + "}",
            '{"ticket": "\\ud800"}',  # a lone surrogate crashed the output writer
            '{"ticket": "x", "extra": {"\\udfff": 1}}',
            '{"ticket": "\\ud83d\\ude00"}',  # a surrogate pair is one valid character
            '{"ticket": "x", "ratio": NaN}',
            '{"ticket": "x", "ratio": Infinity}',
            '{"ticket": "x", "extra": [-Infinity]}',
            '{"ticket": "x", "ratio": 1e400}',
            b'{"ticket": "caf\xe9"}',  # Latin-1, not UTF-8: no silent replacement
            ok,
        ],
    )
    b = batch.load(path, PARAMS)
    assert [n for n, _ in b.rows] == [1, 4, 7, 10, 16]
    assert b.rows[2][1]["extra"] == int("9" * batch.MAX_INT_DIGITS)
    assert b.rows[3][1]["ticket"] == "\N{GRINNING FACE}"
    assert reasons(b) == {
        2: "nested deeper than 64 levels",
        3: "'extra': nested deeper than 64 levels",
        5: "integer of 5,000 digits (at most 100)",
        6: "integer of 101 digits (at most 100)",
        8: "'ticket': not valid Unicode: lone surrogate \\ud800",
        9: "'extra': not valid Unicode: lone surrogate \\udfff in a key",
        11: "'ratio': NaN is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        12: "'ratio': Infinity is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        13: "'extra': -Infinity is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        14: "'ratio': Infinity is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        15: "not valid UTF-8: byte 0xe9 at column 16",
    }
    for _, row in b.rows:  # what is accepted can be written as strict JSON
        json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")


def test_jsonl_line_over_the_row_limit_is_rejected_and_the_next_row_runs(tmp_path):
    big = '{"ticket": "' + "a" * batch.MAX_ROW_CHARS + '"}'
    path = jsonl(tmp_path, ['{"ticket": "a"}', big, "", '{"ticket": "b"}'])
    b = batch.load(path, PARAMS)
    assert [(n, r["ticket"]) for n, r in b.rows] == [(1, "a"), (3, "b")]
    assert reasons(b) == {2: "row longer than 16,777,216 characters"}


@pytest.mark.parametrize("extra", [0, 1])
def test_jsonl_row_limit_boundary(tmp_path, monkeypatch, extra):
    monkeypatch.setattr(batch, "MAX_ROW_CHARS", 40)
    monkeypatch.setattr(batch, "_CHUNK", 7)  # the rest of a long line is skipped in small pieces
    row = '{"ticket": "' + "a" * (26 + extra) + '"}'
    assert len(row) == 40 + extra
    b = batch.load(jsonl(tmp_path, [row, '{"ticket": "z"}']), PARAMS)
    assert [(n, r["ticket"][0]) for n, r in b.rows][-1] == (2, "z")
    assert reasons(b) == ({} if extra == 0 else {1: "row longer than 40 characters"})


def test_csv_cells_go_through_the_same_value_checks(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "ticket,tags,ratio,limit\n"
        'a,"[""\\ud800""]",,\n'
        'b,"' + "[" * 70 + "]" * 70 + '",,\n'
        "c,,nan,\n"
        "d,,1e400,\n"
        "e,,-inf,\n"
        "f,,," + "7" * 200 + "\n"
        "g,,2.5,7\n"
    )
    b = batch.load(path, PARAMS)
    assert [(n, r["ratio"], r["limit"]) for n, r in b.rows] == [(7, 2.5, 7)]
    assert reasons(b) == {
        1: "'tags': not valid Unicode: lone surrogate \\ud800",
        2: "'tags': nested deeper than 64 levels",
        3: "'ratio': 'nan' is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        4: "'ratio': '1e400' is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        5: "'ratio': '-inf' is not a finite number (NaN, Infinity and numbers beyond ±1.8e308 are not JSON)",
        6: "'limit': integer of 200 digits (at most 100)",
    }


# --- CSV ------------------------------------------------------------------------------------------------------


def write_csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "in.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_csv_field_over_the_csv_module_default_limit_is_read(tmp_path):
    big = "x" * 200_000  # over csv's default 131,072: it aborted the batch
    path = write_csv(tmp_path, f'ticket,limit\n"{big}",1\n{big},2\nc,3\n')
    b = batch.load(path, PARAMS)
    assert b.errors == [] and [(n, len(r["ticket"]), r["limit"]) for n, r in b.rows] == [
        (1, 200_000, 1),
        (2, 200_000, 2),
        (3, 1, 3),
    ]


def test_csv_record_over_the_row_limit_is_rejected_and_reading_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_ROW_CHARS", 50)
    monkeypatch.setattr(batch, "_CHUNK", 8)
    long_quoted = '"' + "q\n" * 40 + 'still, the same "" field",9\n'  # newlines and commas inside quotes
    path = write_csv(tmp_path, "ticket,limit\na,1\n" + long_quoted + "b," + "2" * 60 + "\n" + "c,3\n")
    b = batch.load(path, PARAMS)
    assert [(n, r["ticket"]) for n, r in b.rows] == [(1, "a"), (4, "c")]
    assert reasons(b) == {
        2: "row longer than 50 characters (line 3)",
        3: "row longer than 50 characters (line 44)",
    }


def test_csv_unterminated_quote_refuses_the_file_before_any_row(tmp_path):
    rows = "".join(f"t{i},{i}\n" for i in range(1000))
    path = write_csv(tmp_path, 'ticket,limit\nfirst,1\n"oops,2\n' + rows)
    with pytest.raises(HaloError) as e:
        batch.iter_rows(path, PARAMS)  # refused on the call, before a row is read
    assert (
        str(e.value)
        == f"{path}:3:1: error: this quoted field is never closed (it would swallow every row after it)"
    )


def test_csv_quote_spanning_too_many_lines_refuses_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_RECORD_LINES", 5)
    ok = 'a,"two\nlines"\n' + 'b,"' + "\n" * 4 + '"\n'  # 5 lines: allowed
    write_csv(tmp_path, "ticket,extra\n" + ok)
    assert len(batch.load(tmp_path / "in.csv", PARAMS)) == 2
    path = write_csv(tmp_path, "ticket,extra\n" + ok + 'c,x"y\nd,"stray\ne,1\nf,2\ng,3\nh,4\nj,6"\ni,5\n')
    with pytest.raises(HaloError) as e:
        batch.iter_rows(path, PARAMS)
    assert str(e.value) == (
        f"{path}:10:3: error: this quoted field runs over 6 lines (a record may span at most 5): "
        "is a quote not closed?"
    )


def test_csv_rows_numbered_as_users_see_them(tmp_path):
    path = write_csv(tmp_path, '\r\nticket,limit\r\n\r\n"multi\r\nline",1\r\nb,x\r\n\r\nc,3\r\n"d"\r\n')
    b = batch.load(path, PARAMS)
    assert [(n, r["ticket"]) for n, r in b.rows] == [(1, "multi\r\nline"), (3, "c"), (4, "d")]
    assert reasons(b) == {2: "'limit' must be int, got 'x'"}


def test_csv_invalid_utf8_rejects_only_that_row(tmp_path):
    path = write_csv(tmp_path, b'ticket,limit\na,1\n"x\ny\xff",2\nc,3\n')
    b = batch.load(path, PARAMS)
    assert [n for n, _ in b.rows] == [1, 3]
    assert reasons(b) == {2: "not valid UTF-8: byte 0xff at line 4, column 2"}


@pytest.mark.parametrize(
    "text, where, message",
    [
        (b"tick\xffet,limit\na,1\n", "1:5", "not valid UTF-8: byte 0xff"),
        (b"ticket,limit,ticket\na,1,b\n", "1:1", "duplicate column(s) 'ticket' in the header"),
    ],
)
def test_csv_bad_header_refuses_the_file(tmp_path, text, where, message):
    path = write_csv(tmp_path, text)
    with pytest.raises(HaloError) as e:
        batch.iter_rows(path, PARAMS)
    assert str(e.value) == f"{path}:{where}: error: {message}"


# --- Parquet --------------------------------------------------------------------------------------------------


def parquet(tmp_path: Path, n: int = 20_000, **kw) -> Path:
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"ticket": [f"ticket number {i} " * 3 for i in range(n)]}), path, row_group_size=4000, **kw
    )
    return path


def damage(path: Path, row_group: int) -> None:
    """Flip 64 bytes in the middle of a row group's column chunk."""
    chunk = pq.ParquetFile(path).metadata.row_group(row_group).column(0)
    data = bytearray(path.read_bytes())
    mid = chunk.data_page_offset + chunk.total_compressed_size // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def test_parquet_empty_truncated_or_corrupt_is_refused_before_any_row(tmp_path):
    path = parquet(tmp_path)
    good = path.read_bytes()
    damage(path, 3)  # the batch used to die after 12,288 of 20,000 rows
    cases = {
        "corrupt column chunk": path.read_bytes(),
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "footer only cut": good[:-3],
    }
    for name, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(HaloError, match="not a readable Parquet file") as e:
            batch.iter_rows(path, PARAMS)
        assert str(e.value).startswith(f"{path}:1:1: error: "), name


def test_parquet_page_checksums_are_verified(tmp_path):
    path = parquet(tmp_path, compression="none", write_page_checksum=True)
    damage(path, 2)  # uncompressed plain text: only the checksum can tell
    with pytest.raises(HaloError, match="not a readable Parquet file"):
        batch.iter_rows(path, PARAMS)


def test_parquet_bad_values_reject_their_rows_only(tmp_path):
    path = tmp_path / "in.parquet"
    text = pa.array([b"a", b"b\xff", b"c", b"d", b"e"], type=pa.binary()).view(
        pa.string()
    )  # row 2: not UTF-8
    pq.write_table(pa.table({"ticket": text, "ratio": [1.0, 2.0, float("nan"), float("-inf"), 3.0]}), path)
    b = batch.load(path, PARAMS)
    assert [(n, r["ticket"]) for n, r in b.rows] == [(1, "a"), (5, "e")]
    assert sorted(reasons(b)) == [2, 3, 4]
    assert reasons(b)[2].startswith("not readable: 'utf-8' codec can't decode byte 0xff")
    assert reasons(b)[3].startswith("'ratio': NaN is not a finite number")
    assert reasons(b)[4].startswith("'ratio': -Infinity is not a finite number")


def test_parquet_damaged_while_streaming_gives_every_remaining_row_a_record(tmp_path):
    path = parquet(tmp_path)
    rows = batch.iter_rows(path, PARAMS)  # checked whole here
    damage(path, 3)  # after the check, before the rows are read
    items = list(rows)
    assert [x.row if isinstance(x, batch.RowError) else x[0] for x in items] == list(range(1, 20_001))
    errors = [x for x in items if isinstance(x, batch.RowError)]
    assert [e.row for e in errors] == list(range(12_289, 20_001))
    assert errors[0].reason == "not readable from the Parquet file: Corrupt snappy compressed data."


# --- Property: nothing but rows, RowErrors or a HaloError -----------------------------------------------------

LOOSE = (
    parse("workflow w(ticket: json = null, a: json = null, b: json = null) { return ticket }")
    .workflows[0]
    .params
)


def outcome(path: Path) -> tuple[list, bool]:
    """What the loader yields, and whether it refused the file instead."""
    try:
        return list(batch.iter_rows(path, LOOSE)), False
    except HaloError:
        return [], True


def check_outcome(items: list) -> None:
    numbers = []
    for item in items:
        if isinstance(item, batch.RowError):
            numbers.append(item.row)
            item.reason.encode("utf-8")  # printable and writable as it is
        else:
            number, row = item
            numbers.append(number)
            json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert numbers == list(range(1, len(numbers) + 1))


LEAVES = st.sampled_from(
    [
        b"NaN",
        b"-Infinity",
        b"1e400",
        b"-1e-400",
        b'"\\ud800"',
        b'"\\udc00x"',
        b'"\\ud83d\\ude00"',
        b"9" * 120,
        b"-" + b"9" * 100,
        b'"\xff"',
        b'"\xed\xa0\x80"',
        b'"ok"',
        b"1.5",
        b"null",
        b'"\x00"',
        b'"caf\xc3\xa9"',
    ]
)
VALUES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]"),
        st.lists(st.tuples(LEAVES, kids), max_size=3).map(
            lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv) + b"}"
        ),
        kids.map(lambda x: b"[" * 70 + x + b"]" * 70),
    ),
    max_leaves=8,
)
LINES = st.one_of(
    VALUES.map(lambda v: b'{"a": ' + v + b"}"),
    VALUES,
    st.binary(max_size=40),
    st.just(b""),
    st.just(b"\xef\xbb\xbf{}"),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, max_size=8), ending=st.sampled_from([b"\n", b"\r\n"]))
def test_jsonl_hostile_lines_never_escape(tmp_path, lines, ending):
    path = tmp_path / "in.jsonl"
    path.write_bytes(ending.join(lines))
    items, refused = outcome(path)
    assert not refused
    check_outcome(items)


CSV_BITS = st.sampled_from(["a", "b", ",", '"', '""', "\n", "\r\n", "\r", " ", "é", "\x00", "[1]", "nan"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(CSV_BITS, max_size=80).map("".join), raw=st.binary(max_size=40))
def test_csv_random_text_matches_the_csv_module(tmp_path, text, raw):
    path = tmp_path / "in.csv"
    path.write_bytes(b"ticket,a,b\n" + text.encode())
    items, refused = outcome(path)
    check_outcome(items)
    strict = csv.reader(io.StringIO("ticket,a,b\n" + text, newline=""), strict=True)
    try:
        expected, error = [r for r in strict if r][1:], None
    except csv.Error as e:  # strict csv also fails on quirks the loader reads like csv
        expected, error = None, str(e)
    if error is None or error == "unexpected end of data":  # a quote never closed: refused, nothing swallowed
        assert refused == (error is not None)
    if expected is not None:  # well-formed: the same rows as the csv module reads
        got = [x if isinstance(x, batch.RowError) else x[1] for x in items]
        assert len(got) == len(expected)
        for g, values in zip(got, expected, strict=True):
            if len(values) > 3:
                assert g == batch.RowError(g.row, "more values than header columns")
            else:
                values = values + [""] * (3 - len(values))
                assert g == {k: v or None for k, v in zip(["ticket", "a", "b"], values, strict=True)}
    path.write_bytes(b"ticket,a\n" + raw)  # arbitrary bytes too
    check_outcome(outcome(path)[0])
