"""``pipectl schema``: the JSON Schema of pipeline files, for editors, with the options of every
installed extractor and output (:mod:`pipectl.options`)."""

from __future__ import annotations

import json
from typing import Any

import click


def schema_text() -> str:
    """The schema of the file format itself, as shipped (without components' options)."""
    from importlib.resources import files

    return files("pipectl").joinpath("schema/pipeline.schema.json").read_text(encoding="utf-8")


def full_schema(pm: Any) -> dict[str, Any]:
    """The shipped schema, with ``extract`` and ``load`` items checked against the options
    each installed component declares: ``$defs.components`` holds every declaration by kind
    and name, and ``$defs.extractor`` / ``$defs.output`` pick one by ``type`` (``if``/``then``).
    A component that declares nothing takes any options; every one may name a
    ``connection`` (which may give it a required option)."""
    from pipectl.options import schema_of

    schema: dict[str, Any] = json.loads(schema_text())
    defs = schema["$defs"]
    declared: dict[str, dict[str, Any]] = {"extractors": {}, "outputs": {}}
    connected: dict[str, dict[str, Any]] = {"extractors": {}, "outputs": {}}
    for kind, ref in (("extractors", "extractor"), ("outputs", "output")):
        names, rules = [], []
        for component in pm.registries.of(kind):
            names.append(component.name)
            try:
                options = schema_of(component)
            except Exception:  # noqa: BLE001 - a broken declaration: any options
                options = None
            if options is None:
                continue
            body = options.json_schema()
            body["properties"] = {
                "type": {"const": component.name},
                "name": {"type": "string"},
                **body["properties"],
                "connection": {"type": "string"},
            }
            declared[kind][component.name] = body
            then: dict[str, Any] = {"$ref": f"#/$defs/components/{kind}/{component.name}"}
            if body.get("required"):  # a connection may give one (a path, a dsn, a url)
                connected[kind][component.name] = {k: v for k, v in body.items() if k != "required"}
                then = {
                    "if": {"required": ["connection"]},
                    "then": {"$ref": f"#/$defs/components/connected/{kind}/{component.name}"},
                    "else": then,
                }
            rules.append(
                {
                    "if": {"properties": {"type": {"const": component.name}}, "required": ["type"]},
                    "then": then,
                }
            )
        defs[ref] = {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": sorted(names)}},
            "description": f"An installed {ref} ({', '.join(sorted(names))}) and its options.",
            **({"allOf": rules} if rules else {}),
        }
    defs["components"] = declared
    declared["connected"] = connected  # the same, without what a connection may give
    _retarget(
        schema, "#/$defs/component", {"extract": "#/$defs/extractor", "load": "#/$defs/output"}
    )
    return schema


def _retarget(node: Any, old: str, by_key: dict[str, str], key: str | None = None) -> None:
    """Point the ``$ref: old`` under ``extract`` and ``load`` at the kind's own definition."""
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict) and v.get("$ref") == old and (k in by_key or key in by_key):
                v["$ref"] = by_key.get(k) or by_key[key]  # type: ignore[index]
            else:
                _retarget(v, old, by_key, k if k in by_key else key)
    elif isinstance(node, list):
        for v in node:
            _retarget(v, old, by_key, key)


@click.command()
@click.option(
    "--format-only",
    is_flag=True,
    help="Only the file format, without the installed components' options.",
)
@click.pass_obj
def schema(pm: Any, format_only: bool) -> None:
    """Print the JSON Schema of pipeline files (point your editor's YAML support at it): the
    format, and the options of every installed extractor and output."""
    if format_only:
        click.echo(schema_text(), nl=False)
        return
    click.echo(json.dumps(full_schema(pm), indent=2))
