"""The umbrella mounts exactly the installed components and explains the missing ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from llamaforge_cli.components import COMPONENTS, installed_commands
from llamaforge_cli.main import build_app, main


def _help_commands(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        parts = line.strip("│ ").split()
        if parts and parts[0].isidentifier() and line.lstrip().startswith("│"):
            names.add(parts[0])
    return names


def _declared_commands() -> set[str]:
    """The commands the packages declare in their own pyproject.toml files (read as TOML,
    not through the umbrella's entry-point lookup that is under test)."""
    import tomllib

    names = set()
    for pyproject in (Path(__file__).resolve().parents[2]).glob("*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        names |= set(project.get("entry-points", {}).get("llamaforge.commands", {}))
    return names


def test_help_lists_every_installed_component():
    result = subprocess.run(
        [sys.executable, "-m", "llamaforge_cli", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "120", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    # In the workspace every package is installed: exactly its declared commands and the
    # umbrella's own are shown.
    assert _help_commands(result.stdout) == {"doctor", "assets", "pipeline"} | _declared_commands()
    assert _declared_commands() == set(COMPONENTS)


def test_component_app_runs_through_umbrella(capsys):
    assert main(["vocab", "version"]) == 0
    assert "llamaforge-tokenizer" in capsys.readouterr().out


def test_missing_component_is_hidden_and_says_how_to_install(monkeypatch):
    present = {k: v for k, v in installed_commands().items() if k != "serve"}
    monkeypatch.setattr("llamaforge_cli.main.installed_commands", lambda: present)
    app = build_app()
    runner = CliRunner()
    helped = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert helped.exit_code == 0
    assert "serve" not in _help_commands(helped.output)
    assert "vocab" in _help_commands(helped.output)
    missing = runner.invoke(app, ["serve", "some/model", "--port", "1"], env={"COLUMNS": "200"})
    assert missing.exit_code == 2
    assert "llamaforge-serve" in missing.output
    assert "pip install ./packages/serve" in missing.output


def test_doctor_reports_versions_devices_kernels_and_cache(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for needle in ("torch", "transformers", "colossalai", "flash-attn", "CPU", "asset cache"):
        assert needle in out


def test_building_the_cli_does_not_import_torch():
    code = (
        "import sys; from llamaforge_cli.main import build_app; build_app(); "
        "assert 'torch' not in sys.modules, 'torch imported at start-up'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_go_to_stderr_as_plain_text(tmp_path, capsys, monkeypatch, asset):
    """User text in an error is printed as it is: rich markup (``[data]``) and emoji codes
    (``:abc:``) are not interpreted; the line goes to stderr."""
    monkeypatch.setenv("COLUMNS", "300")
    missing = tmp_path / "good.jsonl:abc"
    code = main(
        [
            "data",
            "pack",
            str(missing),
            "-t",
            str(asset("smollm2-tokenizer")),
            "-o",
            str(tmp_path / "o"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.out.strip() == ""
    assert (
        "good.jsonl:abc" in captured.err
        and "\N{INPUT SYMBOL FOR LATIN LETTERS}" not in captured.err
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'out = "o"\nbase_model = "b"\n[vocab]\ncorpus = ["c"]\n[data.mix]\nsources = ["a"]\n'
        '[[train.stages]]\nname = "s"\ndata = ["nope"]\nsteps = 1\n'
    )
    assert main(["pipeline", "run", str(recipe), "--dry-run"]) == 2
    assert "is not defined under [data]" in capsys.readouterr().err
    fixed = ["--set", "train.stages.s.data=['mix']", "--set", "data.mix.max_length=0"]
    assert main(["pipeline", "run", str(recipe), "--dry-run", *fixed]) == 2
    err = capsys.readouterr().err  # the first --set fixed the stage; the second is named
    assert "data.mix.max_length: Input should be greater" in err and "[data]" not in err
