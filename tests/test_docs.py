"""docs/cli.md is generated from the app; this fails when someone forgets to regenerate it."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "generate_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    expected = _generator().render_cli_markdown()
    actual = (ROOT / "docs" / "cli.md").read_text()
    assert actual == expected, "docs/cli.md is stale: run `python scripts/generate_cli_docs.py`"


def test_every_command_has_help_text():
    import typer

    from mixcritic.cli import app

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        assert cmd.help and "not implemented" not in cmd.help.lower(), f"{name} lacks help text"
