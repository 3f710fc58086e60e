"""Step functions the pipeline files under tests/pipeline_files refer to."""

import asyncio

NOT_CALLABLE = 42


def numbers(params):
    return list(range(params["n"]))


async def total(numbers):
    await asyncio.sleep(0)
    return sum(numbers)


def boom():
    raise RuntimeError("boom in a step")


def double(record):
    return {**record, "value": record["value"] * 2}
