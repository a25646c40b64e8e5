"""Does the audio path carry information? Train the tiny preset on toy data, then score answers.

Trains ``mixcritic train --preset tiny`` for a fixed step budget on a toy dataset, then asks the
trained model about held-out test samples twice -- with the real mix, and with the audio replaced
by digital silence -- and scores the parsed answers: category accuracy (5 classes, chance 20 %),
stem accuracy on flawed samples (3 stems, chance 33 %), and the share of unparseable answers.
``--probe`` adds linear probes (category, stem) on the tiny MERT's clip features and on plain
log band energies, to tell "the information is not in the features" from "the LLM did not
learn to use it".

    PYTHONPATH=src python bench/learning.py --work /tmp/learning --steps 60
    PYTHONPATH=src python bench/learning.py --data toy-data --work /tmp/learning --steps 200 --audio-pool 1

Prints a JSON report on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


def make_toy_data(work: Path, tracks: int, seconds: float) -> Path:
    """Toy stems -> synth dataset in ``work`` (kept between runs)."""
    import subprocess

    data = work / "toy-data"
    if (data / "dataset.json").is_file():
        return data
    run = [sys.executable, "-m", "mixcritic"]
    subprocess.run(run + ["toy-stems", str(work / "toy"), "--tracks", str(tracks), "--seconds", str(seconds)], check=True)
    subprocess.run(run + ["synth", str(work / "toy"), "--out", str(data), "--valid-fraction", "0.2"], check=True)
    return data


def score(answers: list[str], records: list[dict]) -> dict:
    """Category accuracy, stem accuracy on flawed samples, unparseable share, predicted categories."""
    from mixcritic.templates import parse_response

    parsed = [parse_response(a) for a in answers]
    category_hits = sum(p is not None and p.category == r["category"] for p, r in zip(parsed, records))
    flawed = [(p, r) for p, r in zip(parsed, records) if r["category"] != "no_error"]
    stem_hits = sum(p is not None and p.stem == r["target_stem"] for p, r in flawed)
    return {
        "n": len(records),
        "category_accuracy": round(category_hits / len(records), 4),
        "stem_accuracy_on_flawed": round(stem_hits / max(1, len(flawed)), 4),
        "unparseable": round(sum(p is None for p in parsed) / len(records), 4),
        "predicted_categories": dict(Counter(p.category if p else "unparseable" for p in parsed)),
        "predicted_stems_on_flawed": dict(Counter(str(p.stem) if p else "unparseable" for p, _ in flawed)),
    }


def ask(critic, clips, records: list[dict], batch_size: int) -> list[str]:
    """Greedy answers for ``clips`` (N, samples) with each record's instruction."""
    answers: list[str] = []
    for start in range(0, len(records), batch_size):
        part = records[start:start + batch_size]
        answers += critic.generate(clips[start:start + batch_size], [r["instruction"] for r in part])
    return answers


def clip_features(encoder_dir: str, clips, batch_size: int = 8):
    """Per clip: mean and std over time of the tiny MERT's layer-averaged hidden states."""
    import torch

    from mixcritic.critics.llm.encoder import hidden_states, load_encoder

    encoder, info = load_encoder(encoder_dir)
    feats = []
    for start in range(0, len(clips), batch_size):
        states = hidden_states(encoder, torch.as_tensor(clips[start:start + batch_size]), info.normalize_input).mean(0)
        feats.append(torch.cat([states.mean(1), states.std(1)], dim=1))
    return torch.cat(feats)


def band_features(clips, rate_hz: int = 24_000, bands: int = 24):
    """Per clip: log energies of ``bands`` log-spaced frequency bands (a plain spectral baseline)."""
    import numpy as np
    import torch

    spectrum = np.abs(np.fft.rfft(clips, axis=1)) ** 2
    freqs = np.fft.rfftfreq(clips.shape[1], 1 / rate_hz)
    edges = np.geomspace(30, rate_hz / 2, bands + 1)
    energies = [spectrum[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])]
    return torch.as_tensor(np.log10(np.stack(energies, axis=1) + 1e-12), dtype=torch.float32)


def probe_accuracy(train_x, train_y, test_x, test_y, classes: int, steps: int = 500) -> float:
    """Test accuracy of a linear softmax classifier fitted on standardised features."""
    import torch

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(layer(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return round(float((layer(test_x).argmax(1) == test_y).float().mean()), 4)


def probes(source, encoder_dir: str, split: str, limit: int) -> dict:
    """Linear probes for category and target stem on the tiny MERT's features and on band energies."""
    import numpy as np
    import torch

    from mixcritic.labels import CATEGORIES, TARGET_STEMS

    train = source.records("train")
    test = source.records(split)[:limit]
    out = {}
    for name, make in (("tiny_mert", lambda c: clip_features(encoder_dir, c)), ("band_energies", band_features)):
        tx = make(np.stack([source.render(r) for r in train]))
        vx = make(np.stack([source.render(r) for r in test]))
        for task, values, key in (("category", CATEGORIES, "category"), ("stem", TARGET_STEMS, "target_stem")):
            rows_t = [i for i, r in enumerate(train) if task == "category" or r["category"] != "no_error"]
            rows_v = [i for i, r in enumerate(test) if task == "category" or r["category"] != "no_error"]
            ty = torch.tensor([values.index(train[i][key]) for i in rows_t])
            vy = torch.tensor([values.index(test[i][key]) for i in rows_v])
            out[f"{name}_{task}_accuracy"] = probe_accuracy(tx[rows_t], ty, vx[rows_v], vy, len(values))
    return out


def audio_path_spread(critic, clips) -> dict:
    """How much the audio tokens differ between clips, relative to their size.

    ``encoder_clip_spread``: std across clips of the clip-mean encoder features (layer-averaged)
    over their overall std; ``tokens_clip_spread`` / ``tokens_time_spread``: std across clips of
    the clip-mean projected audio embeddings / std over time within a clip, over their RMS;
    ``silence_distance``: RMS distance between the clip-mean embeddings of silence and of the
    clips, over their RMS. Near-zero spreads mean the LLM sees the same audio tokens for every clip.
    """
    import torch

    from mixcritic.critics.llm.encoder import hidden_states

    model = critic.model
    clips = torch.as_tensor(clips)
    with torch.no_grad():
        states = hidden_states(model.encoder, clips, model.settings.normalize_input).mean(0)
        tokens = model.audio_embeddings(clips)
        silence = model.audio_embeddings(torch.zeros_like(clips))
        text = model.llm.get_input_embeddings().weight
    rms = tokens.pow(2).mean().sqrt()
    return {
        "layer_weights": [round(w, 4) for w in torch.softmax(model.layer_weights.logits, 0).tolist()],
        "encoder_clip_spread": round(float(states.mean(1).std(0).mean() / states.std()), 4),
        "tokens_rms": round(float(rms), 4),
        "text_embedding_rms": round(float(text.pow(2).mean().sqrt()), 4),
        "tokens_clip_spread": round(float(tokens.mean(1).std(0).pow(2).mean().sqrt() / rms), 4),
        "tokens_time_spread": round(float(tokens.std(1).pow(2).mean().sqrt() / rms), 4),
        "silence_distance": round(float((silence.mean(1) - tokens.mean(1)).pow(2).mean().sqrt() / rms), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tiny-preset learning check: real audio vs silence.")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: build toy data in --work)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (toy data, run)")
    parser.add_argument("--steps", type=int, default=60, help="training steps (the budget)")
    parser.add_argument("--audio-pool", type=int, default=None, help="override the tiny preset's --audio-pool")
    parser.add_argument("--standardize-clips", type=int, default=0, help="train with --standardize-clips N")
    parser.add_argument("--lr", type=float, default=None, help="override the tiny preset's learning rate")
    parser.add_argument("--split", default="test", help="split to score")
    parser.add_argument("--limit", type=int, default=120, help="samples scored")
    parser.add_argument("--probe", action="store_true", help="also fit linear probes (tiny MERT vs band energies)")
    parser.add_argument("--tracks", type=int, default=8, help="toy songs when building toy data")
    parser.add_argument("--seconds", type=float, default=30.0, help="toy song length")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from mixcritic.dataset import open_dataset
    from mixcritic.critics.llm.inference import load_critic
    from mixcritic.critics.llm.train import TrainRequest, run_training

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or make_toy_data(args.work, args.tracks, args.seconds)
    run_dir = args.work / f"run-{args.steps}-pool{args.audio_pool or 'preset'}-lr{args.lr or 'preset'}-std{args.standardize_clips}"
    overrides = [("max_steps", args.steps), ("eval_steps", 0), ("save_steps", max(args.steps, 1))]
    if args.lr is not None:
        overrides.append(("learning_rate", args.lr))
    model_overrides = [("audio_pool", args.audio_pool)] if args.audio_pool else []
    if args.standardize_clips:
        model_overrides.append(("standardize_clips", args.standardize_clips))
    if not (run_dir / "model" / "COMPLETE").is_file():
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.perf_counter()
        summary = run_training(TrainRequest(data, run_dir, "tiny", tuple(overrides), tuple(model_overrides), device="cpu"))
        train_s = time.perf_counter() - started
    else:
        summary = json.loads((run_dir / "train_summary.json").read_text())
        train_s = summary["train_seconds"]
    source = open_dataset(data)
    records = source.records(args.split)[: args.limit]
    clips = np.stack([source.render(r) for r in records])
    critic = load_critic(run_dir, device="cpu")
    torch.manual_seed(0)
    report = {
        "data": str(data),
        "steps": args.steps,
        "audio_pool": critic.settings["audio_pool"],
        "standardize_clips": critic.settings["standardize_clips"],
        "train_seconds": round(train_s, 1),
        "final_train_loss": summary.get("final_loss"),
        "real_audio": score(ask(critic, clips, records, 8), records),
        "silence": score(ask(critic, np.zeros_like(clips), records, 8), records),
        "truth_categories": dict(Counter(r["category"] for r in records)),
        "audio_path_spread": audio_path_spread(critic, clips[:8]),
    }
    if args.probe:
        from mixcritic.critics.llm import base_sources
        from mixcritic.critics.llm.checkpoint import read_settings

        encoder_dir, _ = base_sources(read_settings(critic.folder))
        report["linear_probes"] = probes(source, encoder_dir, args.split, args.limit)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
