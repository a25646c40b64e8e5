import os
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


def test_no_third_party_progress_bar_leaks_through(tmp_path):
    """transformers draws "Writing model shards" / "Loading weights" bars on stderr; the CLI turns them off."""
    code = (
        "import sys\n"
        "if sys.argv[2] == 'cli':\n"
        "    import mixcritic.cli\n"
        "from transformers import Qwen2Config, Qwen2ForCausalLM\n"
        "config = Qwen2Config(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,\n"
        "                     num_key_value_heads=1, vocab_size=32)\n"
        "Qwen2ForCausalLM(config).save_pretrained(sys.argv[1])\n"
        "Qwen2ForCausalLM.from_pretrained(sys.argv[1])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    bare = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a"), "bare"], capture_output=True, text=True, env=env, check=True)
    assert "Writing model shards" in bare.stderr or "Loading weights" in bare.stderr  # the bars this test guards against
    quiet = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b"), "cli"], capture_output=True, text=True, env=env, check=True)
    assert "Writing model shards" not in quiet.stderr and "Loading weights" not in quiet.stderr
