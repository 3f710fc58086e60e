"""Projects: where a pipeline file's relative paths, run history and settings come from.

A project's root is found by walking up from the pipeline file's folder (or, for commands
without a file such as ``pipectl runs list``, from the working directory) to the first folder
holding a ``pipectl.toml``, or a ``pyproject.toml`` with a ``[tool.pipectl]`` table. Without
either, the root is the pipeline file's own folder (or the working directory).

- Relative paths in a pipeline file resolve against the file's folder (not the shell's).
- Run history, stored results, dead letters and the spool live in the project's
  ``.pipectl/`` folder, or in ``$PIPECTL_HOME`` when it is set: the same from any working
  directory.
- The project file holds settings every pipeline of the project shares (all optional)::

      tracker = "sqlite:///.pipectl/pipectl.db"   # or postgresql://...; relative to the root
      env_file = ".env"                            # loaded before pipelines (python-dotenv)
      disable_plugins = ["dask"]                   # as -p no:NAME
      story = "stories/{pipeline}-{short_id}.html" # each run's story; relative to the root

      [params]                                     # defaults for the params pipelines declare
      region = "eu"

      [retention]                                  # applied after each `pipectl run`
      keep = 50                                    # the latest runs of each pipeline
      older_than = "30d"                           # and runs that started longer ago

  In ``pyproject.toml`` the same keys go under ``[tool.pipectl]``.

Finding a project costs a few ``stat`` calls; the file is parsed (``tomllib``) only when there
is one. Nothing here creates a file or folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipectl.errors import PipectlError

__all__ = [
    "PROJECT_FILE",
    "Project",
    "ProjectFileError",
    "find_project",
    "home",
    "project_for_args",
]

PROJECT_FILE = "pipectl.toml"
HOME_ENV = "PIPECTL_HOME"
SETTINGS = ("tracker", "env_file", "disable_plugins", "story", "params", "retention")
RETENTION = ("keep", "older_than")


class ProjectFileError(PipectlError, ValueError):
    """A project file that cannot be read or holds a setting it should not: names the file,
    the key and the fix."""

    def __init__(self, path: Path, key: str | None, message: str):
        self.path, self.key = path, key
        where = f"{path}" + (f": {key}" if key else "")
        super().__init__(f"{where}: {message}")


class Project:
    """A project: its ``root`` folder, the ``file`` its settings come from (None: no project
    file), and those settings, checked."""

    __slots__ = (
        "disable_plugins",
        "env_file",
        "file",
        "params",
        "retention",
        "root",
        "story",
        "tracker",
    )

    def __init__(
        self, root: Path, file: Path | None = None, settings: Mapping[str, Any] | None = None
    ):
        self.root = root
        self.file = file
        settings = dict(settings or {})
        self.tracker: str | None = settings.get("tracker")
        self.env_file: Path | None = (
            (root / settings["env_file"]) if settings.get("env_file") else None
        )
        self.disable_plugins: list[str] = list(settings.get("disable_plugins") or ())
        self.story: str | None = str(root / settings["story"]) if settings.get("story") else None
        self.params: dict[str, Any] = dict(settings.get("params") or {})
        self.retention: dict[str, Any] = dict(settings.get("retention") or {})
        if self.tracker and self.tracker.startswith("sqlite:///"):
            self.tracker = sqlite_url(self.tracker, root)

    @property
    def home(self) -> Path:
        """``$PIPECTL_HOME``, else the project's ``.pipectl/`` folder (which may not exist)."""
        env = os.environ.get(HOME_ENV)
        return Path(env).absolute() if env else self.root / ".pipectl"

    def tracker_url(self) -> str:
        """The project's tracker: its setting, else ``pipectl.db`` in :attr:`home`."""
        return self.tracker or f"sqlite:///{self.home / 'pipectl.db'}"

    def load_env(self) -> list[str]:
        """Load :attr:`env_file`, when it exists, into the environment (variables already set
        win); the names it set."""
        if self.env_file is None:
            return []
        if not self.env_file.is_file():
            return []  # like a fresh clone, where the .env git ignores is not made yet
        from dotenv import dotenv_values

        values = dotenv_values(self.env_file)
        set_now = [k for k, v in values.items() if v is not None and k not in os.environ]
        for name in set_now:
            os.environ[name] = values[name]  # type: ignore[assignment]
        return set_now

    def __repr__(self) -> str:
        return f"Project(root={str(self.root)!r}, file={str(self.file) if self.file else None!r})"


def sqlite_url(url: str, root: Path) -> str:
    path = url[len("sqlite:///") :]
    if path and not os.path.isabs(path):
        return f"sqlite:///{root / path}"
    return url


def _project_file(folder: Path) -> Path | None:
    candidate = folder / PROJECT_FILE
    if candidate.is_file():
        return candidate
    candidate = folder / "pyproject.toml"
    if candidate.is_file():
        try:
            text = candidate.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if "[tool.pipectl" in text:  # parsed only when it may hold settings
            return candidate
    return None


def find_project(start: str | os.PathLike[str] | None = None) -> Project:
    """The project of ``start`` (a pipeline file or a folder; default: the working directory):
    the first folder from there up holding a project file, else ``start``'s folder."""
    begin = Path(start if start is not None else os.getcwd()).absolute()
    if not begin.is_dir():
        begin = begin.parent
    for folder in (begin, *begin.parents):
        found = _project_file(folder)
        if found is not None:
            return Project(folder, found, read_settings(found))
    return Project(begin)


def read_settings(path: Path) -> dict[str, Any]:
    """The settings of a ``pipectl.toml`` (or of ``[tool.pipectl]`` in a ``pyproject.toml``),
    checked: unknown keys (with the closest known one) and wrong types are errors."""
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectFileError(path, None, f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ProjectFileError(path, None, f"cannot be read: {exc.strerror or exc}") from None
    prefix = ""
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("pipectl", {})
        prefix = "tool.pipectl."
        if not isinstance(data, dict):
            raise ProjectFileError(path, "tool.pipectl", "expected a table")
    for key, value in data.items():
        if key not in SETTINGS:
            raise ProjectFileError(
                path,
                prefix + key,
                f"unknown setting{_hint(key, SETTINGS)} (known: {', '.join(SETTINGS)})",
            )
        _check(path, prefix + key, key, value)
    return data


def _check(path: Path, field: str, key: str, value: Any) -> None:
    def fail(message: str) -> None:
        raise ProjectFileError(path, field, message)

    if key in ("tracker", "env_file", "story"):
        if not isinstance(value, str) or not value:
            fail(f"expected a string, got {value!r}")
        if key == "tracker" and "://" not in value and value.lower() != "none":
            fail(
                f"{value!r} is not a URL: sqlite:///path.db (relative to the project), "
                "postgresql://..., or none"
            )
        if key == "story" and not value.lower().endswith((".html", ".md", ".markdown")):
            fail(
                f"{value!r}: the story's file ends in .html or .md ({{run_id}}, {{short_id}} "
                "and {pipeline} are filled in)"
            )
    elif key == "disable_plugins":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            fail(f'expected a list of plugin names, e.g. ["dask"], got {value!r}')
    elif key == "params":
        if not isinstance(value, dict):
            fail('expected a table of param defaults, e.g. [params] then region = "eu"')
    elif key == "retention":
        if not isinstance(value, dict):
            fail('expected a table: [retention] with keep = N and/or older_than = "30d"')
        for sub, item in value.items():
            if sub not in RETENTION:
                raise ProjectFileError(
                    path,
                    f"{field}.{sub}",
                    f"unknown setting{_hint(sub, RETENTION)} (known: keep, older_than)",
                )
            if sub == "keep" and (not isinstance(item, int) or isinstance(item, bool) or item < 1):
                raise ProjectFileError(
                    path,
                    f"{field}.keep",
                    f"expected a whole number of runs "
                    f"to keep per pipeline (1 or more), got {item!r}",
                )
            if sub == "older_than":
                from pipectl.tracking import parse_duration

                try:
                    parse_duration(item)
                except (TypeError, ValueError) as exc:
                    raise ProjectFileError(path, f"{field}.older_than", str(exc)) from None


def _hint(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def home() -> Path:
    """The pipectl home of this process: ``$PIPECTL_HOME``, else ``.pipectl/`` in the project
    of the working directory (the command line sets ``$PIPECTL_HOME`` to the home of the
    pipeline file's project, so a run records in the same place from any directory)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).absolute()
    return find_project().home


#: commands whose first argument is a pipeline file
FILE_COMMANDS = frozenset({"run", "validate", "graph"})


def project_for_args(argv: Sequence[str]) -> Project:
    """The project a command line acts in, found before the command is parsed (plugins to
    disable are read before plugins load): from the pipeline file when the command takes one,
    else from the working directory. Cheap: no parsing of the command's options."""
    args = list(argv)
    command = None
    i = 0
    while i < len(args):
        arg = args[i]
        if command is None:
            if arg in ("-p", "--plugin"):
                i += 2
                continue
            if arg.startswith("-"):
                i += 1
                continue
            command = arg
            i += 1
            if command not in FILE_COMMANDS:
                break
            continue
        if not arg.startswith("-") and os.path.isfile(arg):
            return find_project(arg)
        i += 1
    return find_project()
