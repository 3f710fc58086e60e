"""Step classes in the shape of ia_modules' own test pipelines (simple, parallel,
conditional), written here by hand: none declares ``inputs``, each reads the data it is
handed (the previous step's result, the pipeline input for the first). Only the import line
is pipectl's."""

from __future__ import annotations

from typing import Any

from pipectl.compat.ia_modules import Step

SEEN: list[tuple[str, Any]] = []
"""(step name, data) of every run() call."""


class Prepare(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        topic = input.get("topic")
        return {"topic": f"PROCESSED_{topic.upper()}"}


class Enrich(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        return {"topic": f"{input['topic']}_{self.config['suffix']}"}


class Load(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        items = list(input["items"])
        return {"chunks": [items[0::2], items[1::2]]}


class Stream(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        chunk = input["chunks"][self.config["index"]]
        return {"sum": sum(chunk), "count": len(chunk)}


class Combine(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        return {"total": sum(part["sum"] for part in input.values()), "streams": sorted(input)}


class Score(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        rows = input["rows"]
        return {"rows": rows, "quality": sum(r is not None for r in rows) / len(rows)}


class Label(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        return {"rows": [(self.config["label"], r) for r in input["rows"]]}


class Report(Step):
    async def run(self, input: dict[str, Any]) -> dict[str, Any]:
        SEEN.append((self.name, input))
        return {"report": sorted({label for label, _ in input["rows"]}), "n": len(input["rows"])}
