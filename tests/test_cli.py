import subprocess
import sys

from typer.testing import CliRunner

from mixcritic import __version__
from mixcritic.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mixcritic {__version__}"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mixcritic.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'peft', 'soundfile', 'soxr', 'pyloudnorm') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_are_one_line_without_markup_mangling(tmp_path):
    """A project error prints `Error: <message>` verbatim (brackets kept), exit 1, no traceback."""
    folder = tmp_path / "take [2] final"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a toy tree")
    result = runner.invoke(app, ["toy-stems", str(folder), "--tracks", "1", "--seconds", "1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"Error: {folder}: exists and is not a toy tree" in result.output


COMMANDS = ("toy-stems", "synth", "render", "train", "critique", "evaluate", "demo")


def test_every_help_fits_80_columns_with_an_example_and_no_type_labels_on_flags():
    for command in ("", *COMMANDS):
        args = [command, "--help"] if command else ["--help"]
        result = runner.invoke(app, args, env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, result.output
        text = result.output
        assert max(len(line) for line in text.splitlines()) <= 80, command
        assert "<bool>" not in text and "\\[" not in text, command
        assert "mixcritic " in text.partition("Example")[2], f"{command or 'mixcritic'}: no example"
        for line in text.partition("Example")[2].partition("Arguments:")[0].partition("Options:")[0].splitlines():
            assert not line.strip() or line.startswith("    ") or line.rstrip().endswith(":"), f"{command}: rewrapped example {line!r}"
