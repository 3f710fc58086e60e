"""The ``pipectl`` command line: a click group built by :func:`build_cli` after plugins load.

Every command, the built-in ones included, is added through ``pipectl_register_commands``. The
built-in ones are :class:`LazyCommand` placeholders: ``pipectl --help`` lists them from their
help text, and a command's module is imported when that command is used.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from pipectl import __version__

__all__ = ["ExecutorOption", "LazyCommand", "PipectlGroup", "build_cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _check_plugin_option(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> Any:
    for value in values:
        if not value.startswith("no:") or len(value) <= 3:
            raise click.BadParameter(
                f"{value!r}: use -p no:NAME to disable the plugin NAME", ctx=ctx, param=param
            )
    return values


class LazyCommand(click.Command):
    """A command known by its name and help until it is used, then imported from ``target``
    (``"module:attribute"``): ``pipectl --help`` lists it without importing its module.

    ``help`` is the first paragraph of the command's help (what ``--help`` shortens into the
    list of commands), or ``short_help`` the command's own. In the root :class:`PipectlGroup`,
    resolving the name (running the command, its ``--help``, completing its options) replaces
    the placeholder by the command itself; added to another group, the placeholder hands
    parsing and running to it.
    """

    def __init__(self, name: str, target: str, help: str | None = None, **attrs: Any) -> None:
        super().__init__(name, help=help, **attrs)
        self.target = target
        self._command: click.Command | None = None

    def load(self) -> click.Command:
        """The command itself (imported on the first call)."""
        if self._command is None:
            import importlib

            module, _, attribute = self.target.partition(":")
            self._command = getattr(importlib.import_module(module), attribute)
        return self._command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return self.load().make_context(info_name, args, parent=parent, **extra)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        return self.load().main(*args, **kwargs)

    def to_info_dict(self, ctx: click.Context) -> dict[str, Any]:
        return self.load().to_info_dict(ctx)


class PipectlGroup(click.Group):
    """The root group: resolves :class:`LazyCommand` placeholders when a command is used, and
    lists them (``--help``, completion of command names) without importing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False
        #: name -> functions applied to the command when its placeholder is resolved
        self.on_load: dict[str, list[Any]] = {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if isinstance(command, LazyCommand) and not self._listing:
            command = command.load()
            for fix in self.on_load.pop(cmd_name, ()):
                command = fix(command)
            self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        self._listing = True  # command names and their short help; options need no command
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing = False


def build_cli(pm: Any) -> click.Group:
    """A fresh root group with every plugin's commands (plugins are already loaded in ``pm``).

    A plugin whose ``pipectl_register_commands`` raises, or that replaces a command another
    plugin provides, is left out (its commands too) and reported as failed.
    """
    from pipectl.errors import PluginError

    def show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        """``pipectl, version X``, then each plugin installed beside it with its version."""
        if not value or ctx.resilient_parsing:
            return
        click.echo(f"pipectl, version {__version__} (Python {sys.version.split()[0]})")
        for record in sorted(pm.records.values(), key=lambda r: r.name):
            if record.builtin:
                continue
            dist = f"{record.distribution} {record.version}" if record.distribution else "-"
            status = "" if record.status == "loaded" else f" [{record.status}]"
            click.echo(f"  {dist} (plugin {record.name}){status}")
        ctx.exit()

    @click.group(cls=PipectlGroup, context_settings=CONTEXT_SETTINGS)
    @click.option(
        "-V",
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show_version,
        help="Show the version of pipectl and of each installed plugin, and exit.",
    )
    @click.option(
        "-p",
        "--plugin",
        "plugin_options",
        multiple=True,
        metavar="no:NAME",
        callback=_check_plugin_option,
        help="Disable the plugin NAME (entry point or distribution name) before it is imported.",
    )
    @click.pass_context
    def cli(ctx: click.Context, plugin_options: Sequence[str]) -> None:
        """pipectl runs data pipelines: DAGs of steps, extended by plugins.

        Plugins come from installed distributions (entry-point group `pipectl`).
        Disable one with -p no:NAME or PIPECTL_DISABLE_PLUGINS=a,b; all with
        PIPECTL_DISABLE_PLUGIN_AUTOLOAD=1.
        """
        ctx.obj = pm

    hook = pm.hook.pipectl_register_commands
    owners: dict[str, str] = {}
    impls = list(reversed(hook.get_hookimpls()))  # pluggy's call order
    builtin = {n for n, r in pm.records.items() if r.builtin}
    impls.sort(key=lambda impl: impl.plugin_name not in builtin)  # built-in commands win
    for impl in impls:
        before = dict(cli.commands)
        try:
            impl.function(**{arg: cli for arg in impl.argnames})
            for name, command in cli.commands.items():
                if name in before and before[name] is not command:
                    raise PluginError(
                        f"command {name!r} is already provided by plugin {owners.get(name, '?')!r}"
                    )
            for name in cli.commands.keys() - before.keys():
                owners[name] = impl.plugin_name
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            cli.commands.clear()
            cli.commands.update(before)
            pm.fail_plugin(impl.plugin_name, exc)
    run = cli.commands.get("run")
    if isinstance(run, LazyCommand):  # the plugins' options are added when run is imported
        cli.on_load.setdefault("run", []).append(lambda cmd: add_plugin_options(cmd, pm))
    elif run is not None:
        cli.commands["run"] = add_plugin_options(run, pm)
    return cli


class ExecutorOption(click.Option):
    """A ``pipectl run`` option a plugin added with ``pipectl_addoption``
    (:class:`pipectl.config.PluginOption`): an executor's (its value goes to that executor's
    options under ``key``) when ``executor`` is set, else the plugin's own (its value goes to
    ``config.getoption(dest)``)."""

    def __init__(self, option: Any, **attrs: Any):
        if option.executor is not None:
            name = f"executor_option__{option.executor}__{option.key}"
        else:
            name = f"plugin_option__{option.dest}"
        super().__init__([option.flag, name], **attrs)
        self.option = option
        self.executor = option.executor
        self.key = option.key


def add_plugin_options(run: click.Command, pm: Any) -> click.Command:
    """``run`` with the options plugins add through ``pipectl_addoption`` (e.g. pipectl-dask's
    ``--dask-scheduler``): a copy of the command, so the built-in one is never changed."""
    import copy

    from pipectl.config import collect_options

    taken = {opt for param in run.params for opt in param.opts}
    extra: list[click.Parameter] = []
    for option in collect_options(pm, taken):
        help_text = option.help
        if option.executor is not None:
            help_text = f"{help_text} (implies --executor {option.executor})".strip()
        flag = option.type is bool
        extra.append(
            ExecutorOption(
                option,
                type=None if flag else option.type,
                is_flag=flag,
                default=option.default if option.executor is None else None,
                metavar=option.metavar,
                help=help_text,
            )
        )
    if not extra:
        return run
    command = copy.copy(run)
    command.params = [*command.params, *extra]
    return command


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``pipectl`` console script."""
    from pipectl.errors import PluginError
    from pipectl.plugins import get_plugin_manager, preparse_disabled

    args = list(sys.argv[1:] if argv is None else argv)
    disabled = preparse_disabled(args)
    try:  # the project's plugins to disable and env file, before plugins load
        from pipectl.project import project_for_args

        project = project_for_args(args)
        project.load_env()
        disabled.extend(project.disable_plugins)
    except Exception:  # noqa: BLE001 - the commands that use the project report its problem
        pass
    try:
        pm = get_plugin_manager(disabled=disabled)
        cli = build_cli(pm)
    except PluginError as exc:  # an essential plugin blocked, or PIPECTL_STRICT_PLUGINS=1
        click.echo(f"pipectl: error: {exc}", err=True)
        sys.exit(2)
    cli.main(args=args, prog_name="pipectl", windows_expand_args=False)
