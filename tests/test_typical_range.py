"""The measured critic's typical range (`typical_range_db`) and its shading in `critique --export`.

The range is the fitted natural balance's mean +- 1 SD of each stem's level minus the anchor's; it
must equal a hand computation from the fitted mean and covariance, and the plotted curve must be
measured with the critic's own feature (so a +6 dB gain moves it by exactly +6 dB).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from mixcritic.cli import app
from mixcritic.critics.measured.critic import MeasuredConfig, MeasuredCritic, load_builtin
from mixcritic.critics.measured.model import BalanceModel, centering_projector, relative_level_stats_db
from mixcritic.labels import STEMS

from scripted_critic import ScriptedCritic

runner = CliRunner()
from conftest import shared_dir  # noqa: E402 - $MIXCRITIC_SHARED or ../shared, as every real-music test
SHARED = shared_dir()
SONG = SHARED / "musdb7-cc" / "test" / "Grants - PunchDrunk"
needs_song = pytest.mark.skipif(not SONG.is_dir(), reason=f"real-music fixture {SONG} is absent (set MIXCRITIC_SHARED)")


def synthetic_critic() -> MeasuredCritic:
    """Broadband, stems (bass, drums, other, vocals): centred means and a centred covariance."""
    centring = centering_projector(4)
    mean = centring @ np.array([2.0, 0.0, -1.0, 3.0])
    raw = np.array([[9.0, 1.0, 0.5, -1.0], [1.0, 4.0, 0.0, 0.5], [0.5, 0.0, 6.0, 1.5], [-1.0, 0.5, 1.5, 5.0]])
    model = BalanceModel(STEMS, 1, mean, centring @ raw @ centring)
    config = MeasuredConfig(band_edges_hz=(20.0, 12000.0), no_error_prior=0.2, shrinkage=0.5)
    return MeasuredCritic(model, config, "synthetic", 5.0)


def test_typical_range_is_mean_plus_minus_one_sd_from_the_fitted_gaussian():
    critic = synthetic_critic()
    mean, cov = critic.model.mean_db, critic.model.cov_db2
    b, d, o, v = range(4)  # STEMS order
    ranges = critic.typical_range_db("drums")
    assert set(ranges) == {"bass", "other", "vocals"}
    for stem, i in (("bass", b), ("other", o), ("vocals", v)):
        centre = mean[i] - mean[d]  # by hand: E[y_i - y_d], Var = S_ii + S_dd - 2 S_id
        sd = math.sqrt(cov[i, i] + cov[d, d] - 2 * cov[i, d])
        low, high = ranges[stem]
        assert low == pytest.approx(centre - sd, abs=1e-9) and high == pytest.approx(centre + sd, abs=1e-9), stem
    # the centring shift is invisible: bass vs drums is 2 dB on average, whatever the common level
    assert sum(critic.typical_range_db("drums")["bass"]) / 2 == pytest.approx(2.0, abs=1e-9)
    assert critic.typical_range_db("vocals")["drums"] == pytest.approx((-3.0 - math.sqrt(4 + 5 - 1), -3.0 + math.sqrt(8)))
    assert critic.typical_range_db("piano") == {}


def test_two_bands_linearise_the_stem_total_around_the_mean():
    """Two bands: the stem's total is linearised with each band's share of power at the mean."""
    centring = centering_projector(8)
    mean = centring @ np.array([0.0, -10.0, 3.0, 3.0, 1.0, 0.0, 2.0, -4.0])
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(8, 8))
    cov = centring @ (raw @ raw.T + np.eye(8)) @ centring
    stats = relative_level_stats_db(BalanceModel(STEMS, 2, mean, cov), "drums")
    w_bass = np.array([1.0, 0.1]) / 1.1  # bands 0 and -10 dB: powers 1 and 0.1
    w_drums = np.array([0.5, 0.5])  # equal bands
    contrast = np.concatenate([w_bass, -w_drums, np.zeros(4)])
    assert stats["bass"][0] == pytest.approx(contrast @ mean, abs=1e-9)
    assert stats["bass"][1] == pytest.approx(math.sqrt(contrast @ cov @ contrast), abs=1e-9)


def test_builtin_range_matches_its_statistics():
    critic = load_builtin()
    mean, cov = critic.model.mean_db, critic.model.cov_db2
    low, high = critic.typical_range_db("drums")["vocals"]
    centre, sd = mean[3] - mean[1], math.sqrt(cov[3, 3] + cov[1, 1] - 2 * cov[3, 1])
    assert (low, high) == pytest.approx((centre - sd, centre + sd), abs=1e-9)


@pytest.fixture
def spans(monkeypatch):
    """Count the shaded typical ranges drawn (``Axes.axhspan`` calls)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    calls = []
    original = Axes.axhspan
    monkeypatch.setattr(Axes, "axhspan", lambda self, *a, **k: calls.append((a, k)) or original(self, *a, **k))
    return calls


@needs_song
def test_builtin_export_shades_its_ranges_on_its_own_scale(monkeypatch, tmp_path, spans):
    monkeypatch.delenv("MIXCRITIC_MODEL", raising=False)
    monkeypatch.setattr("mixcritic.critique.default_model_dir", lambda: tmp_path / "no-user-model")
    out = tmp_path / "advice"
    result = runner.invoke(app, ["critique", str(SONG), "--anchor", "drums", "--export", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["engine"] == "measured"
    manifest = json.loads((out / "export.json").read_text())
    expected = load_builtin().typical_range_db("drums")
    assert manifest["typical_range_db"] == {s: [round(lo, 4), round(hi, 4)] for s, (lo, hi) in expected.items()}
    assert manifest["plot"] == "levels.png" and (out / "levels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(a[:2] for a, _ in spans) == sorted(expected.values())


@needs_song
def test_plotted_level_is_the_critics_feature(tmp_path):
    """A +6 dB gain on the bass moves its plotted curve by exactly +6 dB, and the curve over one
    5 s segment is what the measured critic measures there."""
    from mixcritic.export import stem_levels_db
    from mixcritic.session import open_session

    session = open_session(SONG, "drums")
    times_s, levels = stem_levels_db(session, window_s=5.0, step_s=5.0)
    critic = load_builtin()
    measured = critic.levels({s: a[: 5 * session.rate_hz] for s, a in session.audio.items()})
    assert times_s[0] == pytest.approx(2.5)
    assert levels["bass"][0] == pytest.approx(measured["bass"][0] - measured["drums"][0], abs=1e-9)
    session.audio["bass"] = session.audio["bass"] * np.float32(10 ** (6 / 20))
    louder = stem_levels_db(session)[1]["bass"]
    base = stem_levels_db(open_session(SONG, "drums"))[1]["bass"]
    ok = np.isfinite(base)
    assert ok.any() and np.allclose(louder[ok] - base[ok], 6.0, atol=1e-4)


@needs_song
def test_llm_critic_without_a_range_exports_unshaded(monkeypatch, tmp_path, spans):
    critic = ScriptedCritic(lambda segment: "The bass is much too loud; reduce it by 6-12 dB.", {"segment_s": 3.0})
    assert not hasattr(critic, "typical_range_db")
    from mixcritic.critics.llm.critic import MixCritic

    assert not hasattr(MixCritic, "typical_range_db")  # the paper's critic offers no range
    monkeypatch.setattr("mixcritic.critics.load_critic", lambda *a, **k: critic)
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "advice"
    result = runner.invoke(app, ["critique", str(SONG), "--anchor", "drums", "--model", str(run), "--export", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["typical_range_db"] is None and manifest["plot"] == "levels.png"
    assert manifest["segments"] and (out / "levels.png").is_file()
    assert spans == []
