"""The built-in file components (``pipectl.components.files``, registered by ``pipectl.builtins.files``), used directly: the
``csv``, ``jsonl`` and ``python`` extractors and the transactional ``jsonl`` and ``csv`` outputs."""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import inspect
import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from pipectl.plugins import get_plugin_manager

# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def registries():
    """A fresh manager's registries, with the files plugin whether or not it is built in yet."""
    pm = get_plugin_manager(autoload=False, entry_points=())
    assert pm.records["files"].status == "loaded"
    return pm.registries


@pytest.fixture
def extractor(registries):
    return lambda name, **options: registries.extractors.create(name, **options)


@pytest.fixture
def output(registries):
    return lambda name, **options: registries.outputs.create(name, **options)


class FakeCtx:
    """The runner's DataContext, as far as components use it."""

    def __init__(self, fail: bool = False, params: dict | None = None):
        self.params = params or {}
        self.fail = fail
        self.bad: list[tuple] = []

    def bad_record(self, raw, reason, position):
        self.bad.append((raw, reason, position))
        if self.fail:
            raise ValueError(f"bad record at {position}: {reason}")


class BadRecordError(Exception):
    pass


def collect(ext, ctx=None):
    """Every batch the extractor yields, sync or async."""
    ctx = ctx if ctx is not None else FakeCtx()
    gen = ext.batches(ctx)
    if inspect.isasyncgen(gen):

        async def drain():
            return [batch async for batch in gen]

        return asyncio.run(drain())
    return list(gen)


def records(batches):
    return [r for b in batches for r in b]


def write_csv(path, rows, newline="\n"):
    path.write_text(newline.join(rows) + newline, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------


def test_components_are_registered_by_name(registries):
    assert {"csv", "jsonl", "python"} <= set(registries.extractors.names())
    assert {"csv", "jsonl"} <= set(registries.outputs.names())
    plugin = registries.extractors.get("csv").plugin
    assert registries.outputs.get("jsonl").plugin == plugin


def test_describe(extractor, output):
    assert extractor("csv", path="data/orders.csv").describe() == "csv data/orders.csv"
    assert extractor("jsonl", path="in/*.jsonl").describe() == "jsonl in/*.jsonl"
    assert extractor("python", function=records).describe() == (f"python {__name__}:records")
    assert extractor("python", function="os.path:join").describe() == "python os.path:join"
    assert output("jsonl", path="out.jsonl").describe() == "jsonl out.jsonl"
    assert output("csv", path="out.csv").describe() == "csv out.csv"


@pytest.mark.parametrize("name", ["csv", "jsonl"])
def test_extractor_options_are_checked_when_built(extractor, name):
    with pytest.raises(ValueError, match="batch_size"):
        extractor(name, path="x", batch_size=0)
    with pytest.raises(TypeError):
        extractor(name, path="x", no_such_option=1)


# ---------------------------------------------------------------------------------------------
# csv extractor
# ---------------------------------------------------------------------------------------------


def test_csv_reads_records_as_dicts_of_strings(extractor, tmp_path):
    path = write_csv(tmp_path / "orders.csv", ["id,name,value", "1,apple,1.5", '2,"b, c",2'])
    batches = collect(extractor("csv", path=path))
    assert batches == [
        [{"id": "1", "name": "apple", "value": "1.5"}, {"id": "2", "name": "b, c", "value": "2"}]
    ]


def test_csv_batches_are_at_most_batch_size(extractor, tmp_path):
    path = write_csv(tmp_path / "n.csv", ["n"] + [str(i) for i in range(25)])
    batches = collect(extractor("csv", path=path, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [r["n"] for r in records(batches)] == [str(i) for i in range(25)]


def test_csv_default_batch_size_is_10000(extractor, tmp_path):
    path = write_csv(tmp_path / "n.csv", ["n"] + [str(i) for i in range(10_001)])
    assert [len(b) for b in collect(extractor("csv", path=path))] == [10_000, 1]


def test_csv_empty_file_and_header_only_give_no_batches(extractor, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    assert collect(extractor("csv", path=str(tmp_path / "empty.csv"))) == []
    assert collect(extractor("csv", path=str(tmp_path / "header.csv"))) == []


def test_csv_gz_is_read_transparently(extractor, tmp_path):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("id,name\r\n1,é\r\n2,b\r\n")
    assert records(collect(extractor("csv", path=str(path)))) == [
        {"id": "1", "name": "é"},
        {"id": "2", "name": "b"},
    ]


def test_csv_glob_reads_files_in_sorted_order_each_with_its_header(extractor, tmp_path):
    write_csv(tmp_path / "b.csv", ["x,y", "b1,1", "b2,2", "b3,3"])
    write_csv(tmp_path / "a.csv", ["y,x", "1,a1", "2,a2", "3,a3"])
    (tmp_path / "c.txt").write_text("not,csv\n")
    batches = collect(extractor("csv", path=str(tmp_path / "*.csv"), batch_size=4))
    assert [r["x"] for r in records(batches)] == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert [len(b) for b in batches] == [4, 2]  # a short batch is topped up by the next file


def test_csv_glob_matching_nothing_is_an_error(extractor, tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        collect(extractor("csv", path=str(tmp_path / "*.csv")))


def test_csv_missing_file_is_an_error(extractor, tmp_path):
    with pytest.raises(FileNotFoundError):
        collect(extractor("csv", path=str(tmp_path / "nope.csv")))


def test_csv_reads_stdin(extractor, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("a,b\n1,2\n3\n"))
    ctx = FakeCtx()
    assert records(collect(extractor("csv", path="-"), ctx)) == [{"a": "1", "b": "2"}]
    assert ctx.bad == [("3", "expected 2 fields, got 1", "<stdin>:3")]


def test_csv_and_jsonl_read_real_stdin_bytes_in_the_given_encoding(tmp_path):
    code = textwrap.dedent("""
        import importlib, json, sys
        mod = importlib.import_module("pipectl.components.files")
        class Ctx:
            params = {}
            def bad_record(self, raw, reason, position):
                print("BAD", position)
        kind = sys.argv[1]
        cls = mod.CsvExtractor if kind == "csv" else mod.JsonlExtractor
        out = [r for b in cls("-", encoding="latin-1").batches(Ctx()) for r in b]
        print(json.dumps(out))
        print("stdin open:", not sys.stdin.closed)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code, "csv"],
        input="n\r\ncafé\r\n".encode("latin-1"),
        capture_output=True,
        env=env,
        check=True,
    )
    assert done.stdout.decode().splitlines() == ['[{"n": "caf\\u00e9"}]', "stdin open: True"]
    done = subprocess.run(
        [sys.executable, "-c", code, "jsonl"],
        input='{"n": "café"}\n[]\n'.encode("latin-1"),
        capture_output=True,
        env=env,
        check=True,
    )
    assert done.stdout.decode().splitlines() == [
        "BAD <stdin>:2",
        '[{"n": "caf\\u00e9"}]',
        "stdin open: True",
    ]


def test_csv_streams_instead_of_reading_the_whole_input(extractor, monkeypatch):
    consumed = []

    class Lines:  # a stdin without .buffer that counts what was read from it
        def __iter__(self):
            yield "n\n"
            for i in range(1_000):
                consumed.append(i)
                yield f"{i}\n"

    monkeypatch.setattr(sys, "stdin", Lines())
    gen = extractor("csv", path="-", batch_size=10).batches(FakeCtx())
    first = next(gen)
    assert len(first) == 10
    assert len(consumed) < 50
    gen.close()


def test_csv_types_convert_values_and_empty_is_none(extractor, tmp_path):
    path = write_csv(
        tmp_path / "t.csv", ["id,price,ok,name", "1,1.5,true,x", "2,,No,", "-3,1e3,1,007", ",2,,y"]
    )
    ext = extractor(
        "csv", path=path, types={"id": "int", "price": "float", "ok": "bool", "name": "str"}
    )
    ctx = FakeCtx()
    assert records(collect(ext, ctx)) == [
        {"id": 1, "price": 1.5, "ok": True, "name": "x"},
        {"id": 2, "price": None, "ok": False, "name": ""},
        {"id": -3, "price": 1000.0, "ok": True, "name": "007"},
        {"id": None, "price": 2.0, "ok": None, "name": "y"},
    ]
    assert ctx.bad == []


def test_csv_value_that_does_not_convert_is_a_bad_record_at_its_line(extractor, tmp_path):
    path = write_csv(
        tmp_path / "t.csv", ["id,price,ok", "1,1.5,y", "two,2,n", "3,x,t", "4,4,maybe", "5,5,f"]
    )
    ctx = FakeCtx()
    got = records(
        collect(
            extractor("csv", path=path, types={"id": "int", "price": "float", "ok": "bool"}), ctx
        )
    )
    assert got == [{"id": 1, "price": 1.5, "ok": True}, {"id": 5, "price": 5.0, "ok": False}]
    assert [(raw, position) for raw, _, position in ctx.bad] == [
        ("two,2,n", f"{path}:3"),
        ("3,x,t", f"{path}:4"),
        ("4,4,maybe", f"{path}:5"),
    ]
    assert "column 'id'" in ctx.bad[0][1] and "'two'" in ctx.bad[0][1] and "int" in ctx.bad[0][1]
    assert "column 'price'" in ctx.bad[1][1] and "float" in ctx.bad[1][1]
    assert "column 'ok'" in ctx.bad[2][1] and "bool" in ctx.bad[2][1]


def test_csv_unknown_type_is_refused(extractor):
    with pytest.raises(ValueError, match="types\\['id'\\] must be one of"):
        extractor("csv", path="x.csv", types={"id": "integer"})


def test_csv_types_naming_a_missing_column_is_a_file_error(extractor, tmp_path):
    path = write_csv(tmp_path / "t.csv", ["a", "1"])
    with pytest.raises(ValueError, match="types= names columns the file does not have: \\['b'\\]"):
        collect(extractor("csv", path=path, types={"b": "int"}))


def test_csv_rows_with_wrong_field_count_are_bad_records_at_physical_lines(extractor, tmp_path):
    path = write_csv(
        tmp_path / "bad.csv",
        [
            "id,text",  # 1
            "1,one",  # 2
            "2",  # 3  too few
            '3,"multi',  # 4  a record over two lines
            'line"',  # 5
            "4,x,extra",  # 6  too many
            "",  # 7  blank: skipped
            '5,"a',  # 8  bad record that starts here, over three lines
            "b",  # 9
            'c",z',  # 10
            "6,six",  # 11
        ],
    )
    ctx = FakeCtx()
    got = records(collect(extractor("csv", path=path), ctx))
    assert got == [
        {"id": "1", "text": "one"},
        {"id": "3", "text": "multi\nline"},
        {"id": "6", "text": "six"},
    ]
    assert ctx.bad == [
        ("2", "expected 2 fields, got 1", f"{path}:3"),
        ("4,x,extra", "expected 2 fields, got 3", f"{path}:6"),
        ('5,"a\nb\nc",z', "expected 2 fields, got 3", f"{path}:8"),
    ]


def test_csv_positions_count_crlf_lines(extractor, tmp_path):
    path = write_csv(tmp_path / "crlf.csv", ["a,b", '"x\r\ny",1', "bad"], newline="\r\n")
    ctx = FakeCtx()
    assert records(collect(extractor("csv", path=path), ctx)) == [{"a": "x\r\ny", "b": "1"}]
    assert ctx.bad == [("bad", "expected 2 fields, got 1", f"{path}:4")]


def test_csv_bad_record_positions_span_batches_and_files(extractor, tmp_path):
    write_csv(tmp_path / "1.csv", ["n"] + [str(i) for i in range(7)] + ["a,b"])
    write_csv(tmp_path / "2.csv", ["n", "x,y"] + [str(i) for i in range(3)])
    ctx = FakeCtx()
    batches = collect(extractor("csv", path=str(tmp_path / "*.csv"), batch_size=3), ctx)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [p for _, _, p in ctx.bad] == [f"{tmp_path / '1.csv'}:9", f"{tmp_path / '2.csv'}:2"]


def test_csv_bad_record_that_raises_stops_the_extraction(extractor, tmp_path):
    path = write_csv(tmp_path / "bad.csv", ["a,b", "1,2", "3", "4,5"])
    with pytest.raises(ValueError, match=f"bad record at {path}:3"):
        collect(extractor("csv", path=path), FakeCtx(fail=True))


def test_csv_unparsable_row_is_a_bad_record(extractor, tmp_path, monkeypatch):
    path = write_csv(tmp_path / "big.csv", ["a,b", "1,2", "3," + "x" * 100, "5,6"])
    old = csv.field_size_limit(50)
    try:
        ctx = FakeCtx()
        got = records(collect(extractor("csv", path=path), ctx))
    finally:
        csv.field_size_limit(old)
    assert got == [{"a": "1", "b": "2"}, {"a": "5", "b": "6"}]
    assert len(ctx.bad) == 1
    assert ctx.bad[0][2] == f"{path}:3" and "field larger than field limit" in ctx.bad[0][1]


def test_csv_delimiter_encoding_and_bom(extractor, tmp_path):
    path = tmp_path / "semi.csv"
    path.write_bytes("\ufeffid;name\n1;café\n".encode("utf-8"))
    assert records(collect(extractor("csv", path=str(path), delimiter=";"))) == [
        {"id": "1", "name": "café"}
    ]
    path.write_bytes("id;name\n1;café\n".encode("latin-1"))
    assert records(
        collect(extractor("csv", path=str(path), delimiter=";", encoding="latin-1"))
    ) == [{"id": "1", "name": "café"}]


def test_csv_columns_rename_the_header(extractor, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["ID,Full Name", "1,x"])
    ext = extractor("csv", path=path, columns=["id", "name"], types={"id": "int"})
    assert records(collect(ext)) == [{"id": 1, "name": "x"}]
    with pytest.raises(ValueError, match="the header has 2 columns"):
        collect(extractor("csv", path=path, columns=["id"]))


def test_csv_without_header_needs_columns(extractor, tmp_path):
    path = write_csv(tmp_path / "c.csv", ["1,x", "2"])
    with pytest.raises(ValueError, match="header=False"):
        extractor("csv", path=path, header=False)
    ctx = FakeCtx()
    ext = extractor("csv", path=path, header=False, columns=["id", "name"], types={"id": "int"})
    assert records(collect(ext, ctx)) == [{"id": 1, "name": "x"}]
    assert ctx.bad[0][2] == f"{path}:2"


def test_csv_duplicate_header_names_are_refused(extractor, tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a,b,a", "1,2,3"])
    with pytest.raises(ValueError, match="duplicate column names \\['a'\\]"):
        collect(extractor("csv", path=path))


# ---------------------------------------------------------------------------------------------
# jsonl extractor
# ---------------------------------------------------------------------------------------------


def test_jsonl_reads_objects(extractor, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1, "b": [1, 2]}\n{"a": "é", "c": null}\n', encoding="utf-8")
    assert collect(extractor("jsonl", path=str(path))) == [
        [{"a": 1, "b": [1, 2]}, {"a": "é", "c": None}]
    ]


def test_jsonl_batches_and_glob(extractor, tmp_path):
    for name, start in (("2.jsonl", 100), ("1.jsonl", 0)):
        (tmp_path / name).write_text("".join(json.dumps({"n": start + i}) + "\n" for i in range(7)))
    batches = collect(extractor("jsonl", path=str(tmp_path / "*.jsonl"), batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 4]
    assert [r["n"] for r in records(batches)] == [*range(7), *range(100, 107)]


def test_jsonl_gz_and_last_line_without_newline(extractor, tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n{"a": 2}')
    assert records(collect(extractor("jsonl", path=str(path)))) == [{"a": 1}, {"a": 2}]


def test_jsonl_bad_lines_are_bad_records_at_their_line(extractor, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"a": 1}\n'  # 1
        "\n"  # 2 blank: skipped
        "{not json}\n"  # 3
        "[1, 2]\n"  # 4 not an object
        "   \n"  # 5 blank
        '{"a": 2}\r\n'  # 6
        '"str"\n'  # 7
        '{"a": 3}\n'
    )  # 8
    ctx = FakeCtx()
    batches = collect(extractor("jsonl", path=str(path), batch_size=3), ctx)
    assert records(batches) == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert [(raw, pos) for raw, _, pos in ctx.bad] == [
        ("{not json}", f"{path}:3"),
        ("[1, 2]", f"{path}:4"),
        ('"str"', f"{path}:7"),
    ]
    assert ctx.bad[0][1].startswith("invalid JSON")
    assert ctx.bad[1][1] == "expected a JSON object, got list"
    assert ctx.bad[2][1] == "expected a JSON object, got str"


def test_jsonl_bad_record_that_raises_stops_the_extraction(extractor, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{\n')
    with pytest.raises(ValueError, match=f"bad record at {path}:2"):
        collect(extractor("jsonl", path=str(path)), FakeCtx(fail=True))


def test_jsonl_reads_stdin(extractor, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"a": 1}\nnope\n'))
    ctx = FakeCtx()
    assert records(collect(extractor("jsonl", path="-"), ctx)) == [{"a": 1}]
    assert ctx.bad[0][2] == "<stdin>:2"


# ---------------------------------------------------------------------------------------------
# python extractor
# ---------------------------------------------------------------------------------------------


def gen_records(n):
    for i in range(n):
        yield {"i": i}


def test_python_generator_of_records_is_batched(extractor):
    ext = extractor("python", function=gen_records, args={"n": 25}, batch_size=10)
    assert inspect.isgeneratorfunction(ext.batches)
    batches = collect(ext)
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [r["i"] for r in records(batches)] == list(range(25))


def test_python_function_returning_a_list_or_a_record_or_none(extractor):
    assert collect(extractor("python", function=lambda: [{"a": 1}, {"a": 2}])) == [
        [{"a": 1}, {"a": 2}]
    ]
    assert collect(extractor("python", function=lambda: {"a": 1})) == [[{"a": 1}]]
    assert collect(extractor("python", function=lambda: None)) == []


def test_python_batches_and_records_mixed_are_rebatched(extractor):
    def source():
        yield [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        yield {"n": 5}
        yield [{"n": 6}, {"n": 7}, {"n": 8}, {"n": 9}]
        yield ({"n": 10},)

    batches = collect(extractor("python", function=source, batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert [r["n"] for r in records(batches)] == list(range(11))


def test_python_bad_items_are_bad_records(extractor):
    def source():
        yield {"ok": 1}
        yield 42
        yield [{"ok": 2}, "nope"]

    ctx = FakeCtx()
    ext = extractor("python", function=source)
    assert records(collect(ext, ctx)) == [{"ok": 1}, {"ok": 2}]
    assert [(raw, pos) for raw, _, pos in ctx.bad] == [
        (42, f"python {ext.label} record 2"),
        ("nope", f"python {ext.label} record 3"),
    ]
    assert "got int" in ctx.bad[0][1]


def test_python_async_generator_gives_async_batches(extractor):
    async def source(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield {"i": i}

    ext = extractor("python", function=source, args={"n": 7}, batch_size=3)
    assert inspect.isasyncgenfunction(ext.batches)
    assert inspect.isasyncgen(ext.batches(FakeCtx()))
    assert [len(b) for b in collect(ext)] == [3, 3, 1]


def test_python_coroutine_function_gives_async_batches(extractor):
    async def source():
        await asyncio.sleep(0)
        return [{"a": 1}, {"a": 2}, {"a": 3}]

    ext = extractor("python", function=source, batch_size=2)
    assert inspect.isasyncgenfunction(ext.batches)
    assert collect(ext) == [[{"a": 1}, {"a": 2}], [{"a": 3}]]


def test_python_function_by_name_is_imported_on_use(extractor, tmp_path, monkeypatch):
    (tmp_path / "my_source_mod.py").write_text(
        "IMPORTED = True\ndef rows(n):\n    return [{'n': i} for i in range(n)]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ext = extractor("python", function="my_source_mod:rows", args={"n": 3})
    assert "my_source_mod" not in sys.modules
    try:
        assert records(collect(ext)) == [{"n": 0}, {"n": 1}, {"n": 2}]
    finally:
        sys.modules.pop("my_source_mod", None)


def test_python_bad_function_names(extractor):
    with pytest.raises(ValueError, match="module:function"):
        extractor("python", function="os.path.join")
    with pytest.raises(TypeError):
        extractor("python", function=42)
    ext = extractor("python", function="os.path:no_such_function")
    with pytest.raises(ImportError, match="no attribute"):
        collect(ext)


def test_python_sync_function_returning_an_async_iterable_is_refused(extractor):
    async def agen():
        yield {"a": 1}

    with pytest.raises(TypeError, match="not declared async"):
        collect(extractor("python", function=lambda: agen()))


# ---------------------------------------------------------------------------------------------
# transactional file outputs
# ---------------------------------------------------------------------------------------------

SAMPLE = [
    {"id": 1, "name": "é", "tags": ["a"], "ok": True, "none": None},
    {"id": 2, "name": 'x"y', "tags": [], "ok": False, "none": None},
]


def run_output(out, *batches, ctx=None):
    out.open(ctx or FakeCtx())
    try:
        for batch in batches:
            out.write(batch)
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        out.close()


def test_jsonl_output_writes_one_compact_object_per_line(output, tmp_path):
    path = tmp_path / "out.jsonl"
    out = output("jsonl", path=str(path))
    assert out.guarantee == "transactional"
    run_output(out, SAMPLE, [], [{"when": datetime.date(2024, 1, 2)}])
    assert path.read_bytes().decode("utf-8") == (
        '{"id":1,"name":"é","tags":["a"],"ok":true,"none":null}\n'
        '{"id":2,"name":"x\\"y","tags":[],"ok":false,"none":null}\n'
        '{"when":"2024-01-02"}\n'
    )
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_jsonl_output_gz_is_inferred_from_the_suffix(output, tmp_path):
    path = tmp_path / "out.jsonl.gz"
    run_output(output("jsonl", path=str(path)), SAMPLE)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == SAMPLE
    plain = tmp_path / "plain.gz"
    run_output(output("jsonl", path=str(plain), compress=False), SAMPLE)
    assert plain.read_bytes().startswith(b'{"id":1')


def test_jsonl_output_creates_missing_directories_and_an_empty_file(output, tmp_path):
    path = tmp_path / "a" / "b" / "out.jsonl"
    run_output(output("jsonl", path=str(path)))
    assert path.read_bytes() == b""


def test_csv_output_writes_header_and_rows(output, tmp_path):
    path = tmp_path / "out.csv"
    out = output("csv", path=str(path))
    assert out.guarantee == "transactional"
    run_output(
        out,
        [{"id": 1, "name": "a,b", "v": None}, {"id": 2, "name": 'q"', "v": 1.5}],
        [{"id": 3, "name": "multi\nline", "v": True, "extra": "ignored"}],
    )
    assert path.read_bytes().decode() == (
        'id,name,v\r\n1,"a,b",\r\n2,"q""",1.5\r\n3,"multi\nline",True\r\n'
    )
    with open(path, newline="") as f:
        assert list(csv.DictReader(f))[2] == {"id": "3", "name": "multi\nline", "v": "True"}


def test_csv_output_columns_missing_keys_and_delimiter(output, tmp_path):
    path = tmp_path / "out.csv.gz"
    run_output(
        output("csv", path=str(path), columns=["b", "a"], delimiter=";"),
        [{"a": 1, "b": 2}, {"a": 3}, {"c": 4}],
    )
    with gzip.open(path, "rt", newline="") as f:
        assert f.read() == "b;a\r\n2;1\r\n;3\r\n;\r\n"


def test_csv_output_single_column(output, tmp_path):
    path = tmp_path / "one.csv"
    run_output(output("csv", path=str(path), columns=["a"]), [{"a": 1, "b": 2}, {"b": 3}])
    assert path.read_text() == 'a\n1\n""\n'  # a lone empty field is quoted, not a blank line


def test_csv_output_without_records(output, tmp_path):
    with_columns, without = tmp_path / "with.csv", tmp_path / "without.csv"
    run_output(output("csv", path=str(with_columns), columns=["a", "b"]))
    run_output(output("csv", path=str(without)))
    assert with_columns.read_bytes() == b"a,b\r\n"
    assert without.read_bytes() == b""


@pytest.fixture(params=["jsonl", "csv"])
def file_output(request, output, tmp_path):
    """(factory of an output of each kind at tmp_path/out/..., its path)."""
    path = tmp_path / "out" / f"result.{request.param}"
    return (lambda: output(request.param, path=str(path))), path


def test_nothing_is_visible_before_commit(file_output):
    make, path = file_output
    out = make()
    out.open(FakeCtx())
    out.write(SAMPLE)
    temps = os.listdir(path.parent)
    assert not path.exists()
    assert len(temps) == 1
    assert temps[0].startswith(f".{path.name}.") and temps[0].endswith(".tmp")
    assert os.path.join(str(path.parent), temps[0]) == out.temp_path
    out.commit()
    out.close()
    assert os.listdir(path.parent) == [path.name]


def test_abort_leaves_no_file_and_no_temp_file(file_output):
    make, path = file_output
    out = make()
    out.open(FakeCtx())
    out.write(SAMPLE)
    out.abort()
    out.close()
    out.close()
    assert os.listdir(path.parent) == []


def test_close_is_safe_in_any_state(file_output):
    make, path = file_output
    out = make()
    out.close()  # never opened
    out.abort()
    out.close()
    out.open(FakeCtx())
    out.close()  # open, never committed: an abort
    assert os.listdir(path.parent) == []
    run_output(out, SAMPLE)  # the same object serves a new attempt
    out.close()
    out.abort()  # after commit: nothing to undo
    assert os.listdir(path.parent) == [path.name]


def test_a_failure_mid_write_never_leaves_a_partial_file(file_output):
    make, path = file_output
    path.parent.mkdir(parents=True)
    path.write_text("previous run\n")
    out = make()
    out.open(FakeCtx())
    out.write(SAMPLE)
    with pytest.raises(Exception):
        out.write(
            [{"id": 3, "name": object()}]
            if path.suffix == ".jsonl"
            else [{"id": 3, "name": "x", "tags": [], "ok": 1, "none": None}, "not a dict"]
        )
    out.abort()
    out.close()
    assert path.read_text() == "previous run\n"
    assert os.listdir(path.parent) == [path.name]


def test_a_failed_commit_keeps_the_old_file(file_output, monkeypatch):
    make, path = file_output
    path.parent.mkdir(parents=True)
    path.write_text("previous run\n")
    out = make()
    out.open(FakeCtx())
    out.write(SAMPLE)

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        out.commit()
    monkeypatch.undo()
    out.abort()
    out.close()
    assert path.read_text() == "previous run\n"
    assert os.listdir(path.parent) == [path.name]


def test_replacing_a_file_keeps_its_permissions(file_output):
    make, path = file_output
    path.parent.mkdir(parents=True)
    path.write_text("old\n")
    os.chmod(path, 0o640)
    run_output(make(), SAMPLE)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert path.read_text() != "old\n"


def test_new_file_permissions_follow_the_umask(file_output):
    make, path = file_output
    old = os.umask(0o022)
    try:
        run_output(make(), SAMPLE)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_output_can_be_driven_from_different_threads(file_output):
    make, path = file_output
    out = make()
    steps = [lambda: out.open(FakeCtx()), lambda: out.write(SAMPLE), out.commit, out.close]
    for step in steps:
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    assert path.exists() and os.listdir(path.parent) == [path.name]


def test_write_before_open_is_an_error(file_output):
    make, _ = file_output
    with pytest.raises(RuntimeError, match="before open"):
        make().write(SAMPLE)


def test_file_outputs_refuse_other_modes(output):
    with pytest.raises(ValueError, match="mode must be 'replace'"):
        output("jsonl", path="x.jsonl", mode="append")
    with pytest.raises(ValueError, match="delimiter"):
        output("csv", path="x.csv", delimiter=";;")


def test_jsonl_output_c_encoder_and_public_encoder_agree(output, tmp_path):
    import decimal
    import uuid

    tricky = [
        {
            "n": float("nan"),
            "inf": float("-inf"),
            1: "int key",
            "nested": {"a": [1, {}]},
            "dt": datetime.datetime(2024, 1, 2, 3, 4, 5),
            "d": decimal.Decimal("1.10"),
            "u": uuid.UUID(int=1),
            "s": '\u2028\x00"\\',
            "big": 10**30,
        }
    ]
    fast, slow = tmp_path / "fast.jsonl", tmp_path / "slow.jsonl"
    run_output(output("jsonl", path=str(fast)), tricky)
    out = output("jsonl", path=str(slow))
    out._c_encode = None  # the path taken without the C accelerator
    run_output(out, tricky)
    assert fast.read_bytes() == slow.read_bytes()
    assert json.loads(fast.read_text())["dt"] == "2024-01-02T03:04:05"
    with pytest.raises(TypeError, match="not JSON serializable"):
        run_output(output("jsonl", path=str(tmp_path / "x.jsonl")), [{"x": object()}])
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises((ValueError, RecursionError)):
        run_output(output("jsonl", path=str(tmp_path / "y.jsonl")), [circular])
    assert sorted(os.listdir(tmp_path)) == ["fast.jsonl", "slow.jsonl"]


def test_python_generators_stopped_early_are_closed(extractor):
    closed = []

    def sync_source():
        try:
            for i in range(100):
                yield {"i": i}
        finally:
            closed.append("sync")

    async def async_source():
        try:
            for i in range(100):
                yield {"i": i}
        finally:
            closed.append("async")

    gen = extractor("python", function=sync_source, batch_size=10).batches(FakeCtx())
    assert len(next(gen)) == 10
    gen.close()

    async def first_batch():
        agen = extractor("python", function=async_source, batch_size=10).batches(FakeCtx())
        batch = await agen.__anext__()
        await agen.aclose()
        return batch

    assert len(asyncio.run(first_batch())) == 10
    assert closed == ["sync", "async"]


def test_plugin_modules_are_cheap_to_import():
    code = (
        "import sys, pipectl.builtins.files, pipectl.builtins.sqlite; "
        "print(sorted(m for m in ('json', 'gzip', 'sqlite3', 'glob', 'decimal', 'uuid') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"
