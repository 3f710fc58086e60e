"""Step classes written the way ia_modules users write them: a base class built with
(name, config) and an ``async run(data) -> dict``. pipectl runs them unchanged."""

from __future__ import annotations

from typing import Any


class Step:
    """The shape of the ia_modules base class (our own minimal stand-in)."""

    def __init__(self, name: str, config: dict[str, Any]):
        self.name = name
        self.config = config

    async def run(self, data: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


CALLS: list[tuple[str, dict[str, Any]]] = []
"""(step name, data) of every run() call, for the tests to check who ran with what."""


class Prepare(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        return {"topic": f"PROCESSED_{data['topic'].upper()}"}


class Enrich(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        return {"topic": f"{data['topic']}_{self.config.get('suffix', 'ENRICHED')}"}


class Ingest(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        return {"ingested_data": list(data["test_data"])}


class QualityCheck(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        rows = data["ingested_data"]
        filled = [sum(v is not None for v in r.values()) / len(r) for r in rows]
        return {"ingested_data": rows, "quality_score": sum(filled) / len(filled)}


class Process(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        level = self.config["processing_level"]
        return {
            "processed_data": [dict(r, level=level) for r in data["ingested_data"]],
            "processing_level": level,
        }


class Aggregate(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        rows = data["processed_data"]
        return {
            "aggregated_results": {"total": len(rows), "levels": sorted({r["level"] for r in rows})}
        }


class Split(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        items = data["loaded_data"]
        n = self.config["split_count"]
        return {"data_chunks": [items[i::n] for i in range(n)], "chunk_count": n}


class StreamProcess(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        chunk = data["data_chunks"][self.config["stream_id"] - 1]
        return {"processed_data": {"stream": self.config["stream_id"], "sum": sum(chunk)}}


class Merge(Step):
    async def run(self, data):
        CALLS.append((self.name, dict(data)))
        parts = [data[k] for k in sorted(data)]
        return {
            "merged_results": {
                "total": sum(p["sum"] for p in parts),
                "streams": [p["stream"] for p in parts],
            }
        }
