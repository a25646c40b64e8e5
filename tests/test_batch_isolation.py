"""Each clip of a batch is heard by its own row: the model's logits for a batch equal those of each
clip run alone, and differ between clips (so a mix-up inside a batch would show).

The batched-vs-one-by-one generation tests use a model that learned to ignore its audio; this one
compares logits of a random-init tiny model, which does depend on its audio.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from model_helpers import TEST_TINY_SPEC_KW, tone

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def critic(tiny_base):
    from mixcritic.critics.llm import build_critic
    from mixcritic.critics.llm.critic import CriticSettings
    from mixcritic.critics.llm.tiny import TinySpec

    mert_dir, llm_dir = tiny_base
    settings = CriticSettings(str(mert_dir), str(llm_dir), projector_hidden=32, segment_s=1.0, lora_r=4,
                              gradient_checkpointing=False, tiny_spec=asdict(TinySpec(**TEST_TINY_SPEC_KW)))
    model = build_critic(settings, "cpu", training=False)
    model.eval()
    return model


def test_batched_logits_equal_each_clip_alone_and_differ_between_clips(critic):
    from mixcritic.critics.llm.prompt import build_example, collate_examples

    tok = critic.tokenizer
    n = critic.frames_per_clip(24_000)
    noise = torch.randn(24_000, generator=torch.Generator().manual_seed(0)) * 0.1
    clips = torch.stack([torch.from_numpy(tone(220.0, 1.0)), torch.from_numpy(tone(1760.0, 1.0)), noise])
    example = build_example(tok, "Use the drums as the anchor.", n, "The bass is too loud.")
    batch = collate_examples([example] * 3, tok.pad_token_id)
    with torch.no_grad():
        together = critic(clips, batch["input_ids"], batch["attention_mask"], batch["audio_mask"]).logits
        alone = [critic(clips[i : i + 1], batch["input_ids"][i : i + 1], batch["attention_mask"][i : i + 1],
                        batch["audio_mask"][i : i + 1]).logits[0] for i in range(3)]
    answer = ~batch["audio_mask"][0]  # text positions, after the audio: they read the audio through attention
    last_audio = int(batch["audio_mask"][0].nonzero().max())
    after = answer.clone()
    after[: last_audio + 1] = False
    for i in range(3):
        torch.testing.assert_close(together[i][after], alone[i][after], atol=2e-4, rtol=1e-4)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert float((alone[i][after] - alone[j][after]).abs().max()) > 1e-2, (i, j)  # the clips are heard
