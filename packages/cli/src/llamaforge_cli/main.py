"""The `llamaforge` umbrella: mounts the installed components' Typer apps from entry points.

A known component that is not installed gets a hidden placeholder command that says how to
install it; `llamaforge --help` therefore lists exactly what is installed.
"""

from __future__ import annotations

import sys
from importlib import metadata

import click
import typer
from rich.console import Console

from llamaforge_cli import __version__
from llamaforge_cli.assets.cli import app as assets_app
from llamaforge_cli.components import COMPONENTS, installed_commands
from llamaforge_cli.doctor import run_doctor


def _missing_component_command(command: str, message: str):
    def placeholder(ctx: typer.Context) -> None:
        _print_error(message)
        raise typer.Exit(2)

    placeholder.__name__ = f"missing_{command}"
    return placeholder


def build_app(console: Console | None = None) -> typer.Typer:
    """The umbrella app with every installed component mounted."""
    console = console or Console()
    app = typer.Typer(
        name="llamaforge",
        help="Bridge a LLaMA-family model into a new language or domain at low cost.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        ctx.obj = console
        if version:
            console.print(f"llamaforge {__version__}")
            raise typer.Exit()

    @app.command()
    def doctor() -> None:
        """Versions, devices, fused kernels, flash-attn and the asset cache."""
        run_doctor(console)

    app.add_typer(assets_app, name="assets")
    from llamaforge_cli.pipeline.cli import app as pipeline_app

    app.add_typer(pipeline_app, name="pipeline")

    installed = installed_commands()
    for name, ep in sorted(installed.items()):
        try:
            sub = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken install must not take the CLI down
            msg = f"component {name!r} ({ep.value}) is installed but failed to load: {exc}"
            _add_placeholder(app, name, msg)
            continue
        summary = COMPONENTS[name].summary if name in COMPONENTS else None
        if _single_command(sub):  # `llamaforge train CONFIG`, not `llamaforge train run CONFIG`
            info = sub.registered_commands[0]
            app.command(name, help=summary or info.help)(info.callback)
        else:
            app.add_typer(sub, name=name, help=summary)
    for name, comp in COMPONENTS.items():
        if name not in installed:
            msg = (
                f"`llamaforge {name}` needs the {comp.distribution} component, which is not "
                f"installed. Install it with: {comp.install_hint()}"
            )
            _add_placeholder(app, name, msg)
    return app


def _single_command(sub: typer.Typer) -> bool:
    return (
        len(sub.registered_commands) == 1
        and not sub.registered_groups
        and sub.registered_callback is None
    )


def _add_placeholder(app: typer.Typer, name: str, message: str) -> None:
    app.command(
        name,
        hidden=True,
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
    )(_missing_component_command(name, message))


def _click_class(name: str, fallback: type) -> type:
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name:
            return cls
    return fallback


_CLICK_EXCEPTION = _click_class("ClickException", click.ClickException)
_CLICK_EXIT = (typer.Exit, click.exceptions.Exit)
_CLICK_ABORT = (typer.Abort, click.exceptions.Abort)


def _print_error(message: str) -> None:
    """One red ``error:`` line on stderr; the message is plain text (no rich markup or emoji
    codes: ``[data]`` and ``:abc:`` in a user's input print as they are)."""
    from rich.text import Text

    Console(stderr=True).print(Text("error: ", style="red") + Text(message), soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one red line on stderr and exit code 2, never a
    traceback."""
    console = Console()
    command = typer.main.get_command(build_app(console))
    try:
        result = command.main(args=argv, prog_name="llamaforge", standalone_mode=False)
    except Exception as exc:
        # typer may vendor its own click: match its exception types by their role.
        if isinstance(exc, _CLICK_EXIT):
            return exc.exit_code
        if isinstance(exc, _CLICK_ABORT):
            Console(stderr=True).print("[red]aborted[/]")
            return 130
        if isinstance(exc, _CLICK_EXCEPTION):
            exc.show()
            return exc.exit_code
        if getattr(type(exc), "user_facing", False):
            _print_error(str(exc))
            return 2
        raise
    return result if isinstance(result, int) else 0


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


__all__ = ["build_app", "main", "metadata"]
