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


def use_token(params, ctx):
    ctx.logger.info(
        "calling the api", token=params["token"], url=f"https://x/?key={params['token']}"
    )
    raise PermissionError(f"the API refused key {params['token']}")


def bronze(params):
    return [{"id": i, "amount": i * 10} for i in range(params["n"])]


def silver(bronze):
    return [r for r in bronze if r["amount"] > 0]


def gold(silver):
    return sum(r["amount"] for r in silver)
