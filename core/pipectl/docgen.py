"""Generate ``docs/hooks.md`` from :mod:`pipectl.hookspecs`.

``python -m pipectl.docgen`` prints the hook reference; ``python -m pipectl.docgen > docs/hooks.md``
writes it. ``python -m pipectl.docgen --components > docs/components.md`` writes the component
reference (the built-in extractors' and outputs' declared options, and the fields of a
pipeline file's step). ``python -m pipectl.docgen --schema`` rewrites the ``$defs.step`` of
``pipectl/schema/pipeline.schema.json`` from the step fields' declaration
(:mod:`pipectl.files.fields`). ``python -m pipectl.docgen --check [FILE]`` exits 1 with a
message when FILE (default: ``docs/hooks.md`` of the source tree) differs from what would be
generated.

The Markdown comes from the module docstring (the introduction), the banner comments that group
the hooks (``# Registration``, ...) and each hook's signature and docstring. Standard library only.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
COMMAND = "python -m pipectl.docgen > docs/hooks.md"

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_FIELD = re.compile(r":(param\s+(\w+)|returns?):\s*(.*)")
_BANNER = re.compile(r"^# -{20,}\n# (\S.*)\n# -{20,}$", re.MULTILINE)


def _inline(text: str) -> str:
    """reST inline markup to Markdown: ``x`` and :class:`~a.b.C` become code spans."""

    def role(match: re.Match[str]) -> str:
        tilde, target = match.groups()
        return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"

    return _LITERAL.sub(r"`\1`", _ROLE.sub(role, text))


def _rst_to_markdown(doc: str, heading: str = "##") -> str:
    """Convert one (cleaned) docstring: fields, code blocks, section titles, inline markup."""
    lines = doc.splitlines()
    out: list[str] = []
    params: list[str] = []
    i = 0

    def flush_params() -> None:
        if params:
            out.extend(["**Parameters:**", "", *params, ""])
            params.clear()

    while i < len(lines):
        line = lines[i]
        field = _FIELD.match(line)
        if field:
            text = [field.group(3).strip()]
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                text.append(lines[i].strip())
                i += 1
            body = _inline(" ".join(text))
            if field.group(2):
                params.append(f"- `{field.group(2)}`: {body}")
            else:
                flush_params()
                out.extend([f"**Returns:** {body}", ""])
            continue
        flush_params()
        if line.strip().startswith(".. code-block::"):
            language = line.split("::", 1)[1].strip()
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n")
            out.extend([f"```{language}", code, "```", ""])
            continue
        if i + 1 < len(lines) and line.strip() and re.fullmatch(r"-{3,}|={3,}", lines[i + 1]):
            out.extend([f"{heading} {line.strip()}", ""])
            i += 2
            continue
        out.append(_inline(line) if line.strip() else "")
        i += 1
    flush_params()
    # collapse runs of blank lines
    markdown = re.sub(r"\n{3,}", "\n\n", "\n".join(out))
    return markdown.strip("\n")


def _hooks(module: ModuleType) -> list[tuple[str, int, object]]:
    """(name, line, function) of every hookspec in ``module``, in source order."""
    marker = module.hookspec.project_name + "_spec"
    found: list[tuple[str, int, object]] = []
    for name, obj in vars(module).items():
        if inspect.isfunction(obj) and hasattr(obj, marker):
            found.append((name, inspect.getsourcelines(obj)[1], obj))
    return sorted(found, key=lambda item: item[1])


def generate(module: ModuleType | None = None) -> str:
    """The Markdown hook reference of ``module`` (default :mod:`pipectl.hookspecs`)."""
    if module is None:
        from pipectl import hookspecs

        module = hookspecs
    source = inspect.getsource(module)
    banners = [
        (source.count("\n", 0, m.start()) + 1, m.group(1).strip()) for m in _BANNER.finditer(source)
    ]
    doc = inspect.cleandoc(module.__doc__ or "")
    title, _, intro = doc.partition("\n")
    parts = [
        "# Hook reference",
        "",
        f"<!-- Generated from pipectl/hookspecs.py by `{COMMAND}`; do not edit by hand. -->",
        "",
        _rst_to_markdown(_inline(title).rstrip(".") + ".\n" + intro),
        "",
    ]
    group = None
    for name, line, func in _hooks(module):
        current = next((t for start, t in reversed(banners) if start < line), "Hooks")
        if current != group:
            group = current
            parts.extend([f"## {group}", ""])
        args = ", ".join(inspect.signature(func).parameters)  # type: ignore[arg-type]
        parts.extend([f"### {name}({args})", ""])
        parts.extend([_rst_to_markdown(inspect.cleandoc(func.__doc__ or ""), "####"), ""])
    return "\n".join(parts).rstrip("\n") + "\n"


COMPONENTS_PATH = DEFAULT_PATH.with_name("components.md")
COMPONENTS_COMMAND = "python -m pipectl.docgen --components > docs/components.md"


def render_components() -> str:
    """The reference of the built-in extractors and outputs (``docs/components.md``): each
    one's options as its constructor declares them (:mod:`pipectl.options`)."""
    from pipectl.options import describe, schema_of
    from pipectl.plugins import get_plugin_manager

    pm = get_plugin_manager(autoload=False, entry_points=())
    parts = [
        "# Component reference",
        "",
        f"<!-- generated by `{COMPONENTS_COMMAND}`; a test checks it is up to date -->",
        "",
        "The options of the built-in extractors and outputs, as each declares them: the",
        "typed signature of its constructor, registered with it (`register(name, factory,",
        "options=...)`, see [the plugin guide](plugins.md#declaring-options)). `pipectl "
        "validate` checks",
        "a pipeline's components against them (unknown options, with the closest known one;",
        "missing required options; types), `pipectl schema` includes them, and options typed",
        "as a file path are relative to the pipeline file's folder. Plugins' components",
        "(`pipectl plugins` lists them) document theirs in their own packages.",
        "",
    ]
    for kind, title in (("extractors", "Extractors"), ("outputs", "Outputs")):
        parts.extend([f"## {title}", ""])
        for component in sorted(pm.registries.of(kind), key=lambda c: c.name):
            schema = schema_of(component)
            parts.extend([f"### `{component.name}` ({kind[:-1]}, plugin `{component.plugin}`)", ""])
            if schema is None:
                parts.extend(["Declares no options.", ""])
                continue
            doc = inspect.getdoc(schema.target) or ""
            first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
            if first:
                parts.extend([_inline(first), ""])
            parts.extend(
                ["| option | type | required | default | description |", "|---|---|---|---|---|"]
            )
            for option in schema.options.values():
                if kind == "extractors" and option.name == "batch_size":
                    text = "records per batch (the data step's `batch_size` when not given)"
                else:
                    text = _inline(option.doc)
                default = "" if option.required else f"`{option.default!r}`"
                text = text.replace("|", "\\|")
                parts.append(
                    f"| `{option.name}` | {describe(option.type)} | "
                    f"{'yes' if option.required else ''} | {default} | {text} |"
                )
            parts.append("")
    parts.extend(_connection_types())
    parts.extend(_step_fields())
    return "\n".join(parts).rstrip("\n") + "\n"


def _connection_types() -> list[str]:
    """The "Connections" section: each built-in connection type, what it gives a component
    and its fields (:mod:`pipectl.components.connections`)."""
    from pipectl.connections import connection_types
    from pipectl.options import Schema, describe

    parts = [
        "## Connections",
        "",
        "Any extractor or output of a data step takes `connection: NAME`, the name of a",
        "connection declared under `connections:` at the top of the pipeline file (see",
        "[the guide](guide.md#connections)). The connection gives the component options: a",
        "component that also gives one the connection replaces is an error; the options a",
        "connection joins are combined with the component's own. Secret fields are masked",
        "(`***`) in everything pipectl prints, logs and records.",
        "",
    ]
    for name, kind in connection_types().items():
        declared = kind.declared
        schema = Schema(declared)
        doc = inspect.getdoc(declared) or ""
        first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
        serves = ", ".join(f"`{s}`" for s in declared.serves) or "any with those options"
        said = [f"Components: {serves}."]
        if declared.replaces:
            said.append(f"Not given beside it: {', '.join(f'`{o}`' for o in declared.replaces)}.")
        if declared.joins:
            said.append(
                f"Combined with the component's: {', '.join(f'`{o}`' for o in declared.joins)}."
            )
        parts.extend([f"### `{name}` (connection)", "", _inline(first), ""])
        parts.extend(
            [
                " ".join(said),
                "",
                "| field | type | required | secret | description |",
                "|---|---|---|---|---|",
            ]
        )
        for option in schema.options.values():
            text = _inline(option.doc).replace("|", "\\|")
            secret = "yes" if option.name in declared.secret_fields else ""
            parts.append(
                f"| `{option.name}` | {describe(option.type)} | "
                f"{'yes' if option.required else ''} | {secret} | {text} |"
            )
        parts.append("")
    return parts


def _schema_type(schema: Any) -> str:
    """A JSON Schema fragment in a few words: ``integer >= 1``, ``one of a, b``, ..."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(_schema_type(s) for s in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    types = schema.get("type", "any")
    text = " or ".join(types) if isinstance(types, list) else str(types)
    if text == "array" and "items" in schema:
        text = f"list of {_schema_type(schema['items'])}"
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    if "exclusiveMinimum" in schema:
        text += f" > {schema['exclusiveMinimum']}"
    if "maximum" in schema:
        text += f" <= {schema['maximum']}"
    return text


def _step_fields() -> list[str]:
    """The "Step fields" section: every field of a pipeline file's step, from its declaration
    (:mod:`pipectl.files.fields`, and each step type's ``FILE_FIELDS``)."""
    from pipectl.files.fields import FIELDS, KIND_FIELDS, type_fields

    parts = [
        "## Step fields",
        "",
        "The fields of a step in a pipeline file, as `pipectl/files/fields.py` and each step",
        "type's module declare them (the loader, `pipectl validate`, `pipectl schema` and",
        "`to_yaml` all read that declaration). A step is one of: `run` (a function or step",
        "class), a data step (`extract` and `load`), `pipeline` (a sub-pipeline) or `type` (a",
        "plugin step type).",
        "",
    ]
    groups = [("Every step", FIELDS), ("What the step is", KIND_FIELDS)]
    titles = {"data": "A data step", "pipeline": "A sub-pipeline step"}
    for step_type, fields in type_fields().items():
        groups.append((titles.get(step_type, f"A `{step_type}` step"), fields))
    for title, fields in groups:
        parts.extend([f"### {title}", "", "| field | type | description |", "|---|---|---|"])
        for field in fields:
            text = field.description + (" Required." if field.required else "")
            cell = _schema_type(field.schema).replace("|", "\\|")
            parts.append(f"| `{field.name}` | {cell} | {text.replace('|', chr(92) + '|')} |")
        parts.append("")
    return parts


SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "pipeline.schema.json"
SCHEMA_COMMAND = "python -m pipectl.docgen --schema"


def render_schema(path: Path = SCHEMA_PATH) -> str:
    """The JSON Schema of pipeline files (``pipectl/schema/pipeline.schema.json``) with its
    ``$defs.step`` generated from the step fields' declaration (:mod:`pipectl.files.fields`)
    and ``$defs.connections`` from the built-in connection types'
    (:mod:`pipectl.components.connections`); the rest of the file is kept as it is."""
    import json

    from pipectl.files.connections import json_schema as connections_schema
    from pipectl.files.fields import step_schema

    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["$defs"]["step"] = step_schema()
    schema["$defs"]["connections"] = connections_schema()
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if args[:1] == ["--components"]:
        sys.stdout.write(render_components())
        return 0
    if args[:1] == ["--schema"]:
        SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
        print(f"wrote {SCHEMA_PATH.name}", file=sys.stderr)
        return 0
    if args[:1] != ["--check"]:
        if args:
            print(
                "usage: python -m pipectl.docgen [--components | --schema | --check [FILE]]"
                f" (got {' '.join(args)})",
                file=sys.stderr,
            )
            return 2
        sys.stdout.write(generate())
        return 0
    path = Path(args[1]) if len(args) > 1 else DEFAULT_PATH
    expected = generate()
    try:
        actual = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{path}: cannot read it ({exc}); run `{COMMAND}`", file=sys.stderr)
        return 1
    if actual == expected:
        return 0
    diff = difflib.unified_diff(
        actual.splitlines(), expected.splitlines(), str(path), "generated", lineterm="", n=1
    )
    print(f"{path} is out of date with pipectl/hookspecs.py; run `{COMMAND}`", file=sys.stderr)
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
