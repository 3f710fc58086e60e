"""Records read from a response body as it comes in, so that memory is bounded by a batch of
records rather than by the body.

- :func:`json_lines`: a JSON Lines body, line by line.
- :class:`JsonWalk`: a JSON document whose records are an array at a path of object keys. It walks
  the ``{``, ``:``, ``,`` and ``}`` along that path and yields the array's items one by one; every
  value (each item, and every value beside the path, such as a next-page cursor) is decoded by the
  standard library's ``json.JSONDecoder.raw_decode``, so values come out exactly as ``json.loads``
  makes them. What is beside the path is kept (``skeleton``), the array replaced by ``[]``.

Both raise ``ValueError`` for a body that is not valid JSON.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from typing import Any

_decode = json.JSONDecoder().raw_decode
_SPACE = re.compile(r"[ \t\n\r]*")


async def json_lines(chunks: AsyncIterator[bytes], batch_size: int) -> AsyncIterator[list[Any]]:
    """The values of a JSON Lines body, in lists of ``batch_size`` (the last one shorter), as the
    lines come in. Blank lines are skipped; a line that is not JSON is an error naming it."""
    records: list[Any] = []
    tail: list[bytes] = []  # the start of a line whose end has not come yet
    number = 0
    async for chunk in chunks:
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            tail.append(chunk)
            continue
        tail.append(lines[0])
        lines[0] = b"".join(tail)
        tail = [lines.pop()]
        for line in lines:
            number += 1
            if line.strip():
                records.append(_line(line, number))
        while len(records) >= batch_size:
            yield records[:batch_size]
            del records[:batch_size]
    last = b"".join(tail)
    if last.strip():
        records.append(_line(last, number + 1))
    if records:
        yield records


def _line(line: bytes, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ValueError(f"line {number}: {exc}") from None


class JsonWalk:
    """One JSON document read from ``chunks``: :meth:`records` yields the items of the array at
    ``path`` (object keys) in lists of ``batch_size``; then ``skeleton`` is the document without
    them and ``streamed`` says whether there was such an array.

    When the value at a step of ``path`` is not an object (or the path ends at something other
    than an array) it is decoded whole, like every value beside the path: the caller then finds
    in ``skeleton`` what is there instead. Memory holds one item (or one such value) and a chunk.
    """

    def __init__(self, chunks: AsyncIterator[bytes], path: tuple[str, ...], batch_size: int):
        self._chunks = chunks
        self._path = path
        self._batch_size = batch_size
        self._decoder: Any = None
        self._text = ""  # decoded, the part from ``_pos`` not parsed yet
        self._pos = 0
        self._offset = 0  # characters dropped before ``_text``, for messages
        self._done = False  # the body has ended
        self._result: Any = None
        self.skeleton: Any = None
        self.streamed = False

    async def records(self) -> AsyncIterator[list[Any]]:
        async for batch in self._walk(self._path):
            yield batch
        self.skeleton = self._result
        if await self._peek():
            raise self._error("Extra data")

    async def _walk(self, path: tuple[str, ...]) -> AsyncIterator[list[Any]]:
        """The value at this point, the array at ``path`` below it streamed; sets ``_result``."""
        char = await self._peek()
        if path and char == "{":
            async for batch in self._object(path):
                yield batch
        elif not path and char == "[" and not self.streamed:
            async for batch in self._array():
                yield batch
        else:
            self._result = await self._value()

    async def _object(self, path: tuple[str, ...]) -> AsyncIterator[list[Any]]:
        self._pos += 1  # {
        found: dict[str, Any] = {}
        if await self._peek() == "}":
            self._pos += 1
        else:
            while True:
                if await self._peek() != '"':
                    raise self._error("Expecting property name enclosed in double quotes")
                key = await self._value()
                if await self._peek() != ":":
                    raise self._error("Expecting ':' delimiter")
                self._pos += 1
                if key == path[0] and not self.streamed:
                    async for batch in self._walk(path[1:]):
                        yield batch
                    found[key] = self._result
                else:
                    found[key] = await self._value()
                if not await self._delimiter("}"):
                    break
        self._result = found

    async def _array(self) -> AsyncIterator[list[Any]]:
        self._pos += 1  # [
        self.streamed = True
        batch: list[Any] = []
        if await self._peek() == "]":
            self._pos += 1
        else:
            while True:
                batch.append(await self._value())
                if len(batch) >= self._batch_size:
                    yield batch
                    batch = []
                if not await self._delimiter("]"):
                    break
        if batch:
            yield batch
        self._result = []

    async def _delimiter(self, close: str) -> bool:
        """After a member: True at ``,`` (more follow), False at ``close``."""
        char = await self._peek()
        if char not in (",", close):
            raise self._error("Expecting ',' delimiter")
        self._pos += 1
        return char == ","

    async def _peek(self) -> str:
        """The next character that is not white space ("" at the end of the body)."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text) or self._done:
                return self._text[self._pos : self._pos + 1]
            await self._fill(1)

    async def _value(self) -> Any:
        """The JSON value that starts here. A value that may go on in the next chunk (it
        reaches the end of the text read so far) is decoded again with more text: at least
        twice as much each time, so that a long value costs linear time."""
        await self._peek()
        while True:
            try:
                value, end = _decode(self._text, self._pos)
            except json.JSONDecodeError as exc:
                if self._done:
                    raise self._error(exc.msg, exc.pos) from None
            else:
                if end < len(self._text) or self._done:
                    self._pos = end
                    return value
            await self._fill(2 * (len(self._text) - self._pos) + 1)

    async def _fill(self, size: int) -> None:
        """Read until the text not parsed yet holds ``size`` characters, or the body ends."""
        self._offset += self._pos
        parts = [self._text[self._pos :]]
        have = len(parts[0])
        while have < size and not self._done:
            chunk = await anext(self._chunks, None)
            if self._decoder is None:  # UTF-8, or UTF-16/32 with or without a BOM, as json.loads
                self._decoder = codecs.getincrementaldecoder(json.detect_encoding(chunk or b""))()
            if chunk is None:
                self._done = True
                parts.append(self._decoder.decode(b"", final=True))
            else:
                parts.append(self._decoder.decode(chunk))
            have += len(parts[-1])
        self._text = "".join(parts)
        self._pos = 0

    def _error(self, message: str, pos: int | None = None) -> ValueError:
        return ValueError(f"{message} (char {self._offset + (self._pos if pos is None else pos)})")
