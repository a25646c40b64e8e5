"""Instruction/response templates, the response parser and DPO rejected answers."""

from __future__ import annotations

import re
import string

import numpy as np
import pytest

from mixcritic.labels import CATEGORIES, CORRECTION_DB, STEMS, TARGET_STEMS, Label
from mixcritic.templates import (
    INSTRUCTION_TEMPLATES,
    REJECTION_KINDS,
    RESPONSE_TEMPLATES,
    TEMPLATE_VERSION,
    make_rejected,
    parse_response,
    render_instruction,
    render_response,
)

ALL_LABELS = [Label("no_error")] + [
    Label.for_flaw(category, stem) for category in CATEGORIES if category != "no_error" for stem in TARGET_STEMS
]


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_template_inventory():
    assert TEMPLATE_VERSION
    assert len(INSTRUCTION_TEMPLATES) == 10
    assert len(set(INSTRUCTION_TEMPLATES)) == 10
    for template in INSTRUCTION_TEMPLATES:
        assert fields(template) == {"duration_sec", "stems_present", "anchor_stem"}
    assert set(RESPONSE_TEMPLATES) == set(CATEGORIES)
    for category, templates in RESPONSE_TEMPLATES.items():
        assert len(templates) == 10 and len(set(templates)) == 10, category
        expected = set() if category == "no_error" else {"target_stem", "min_gain_db", "max_gain_db"}
        assert all(fields(template) == expected for template in templates), category


@pytest.mark.parametrize("label", ALL_LABELS, ids=lambda label: f"{label.category}-{label.stem}")
def test_parse_inverts_render_for_every_template(label):
    for template_id in range(10):
        assert parse_response(render_response(label, template_id)) == label, template_id


def test_round_trip_survives_llm_style_noise():
    for label in ALL_LABELS:
        for template_id in range(10):
            text = render_response(label, template_id)
            noisy = "  " + text.upper().replace(" ", "   ").replace(".", " !!") + "\n"
            assert parse_response(noisy) == label, text


def test_rendered_responses_state_magnitudes_and_direction_by_verb():
    assert render_response(Label.for_flaw("quiet", "vocals"), 0) == (
        "Verdict on the vocals: a little too quiet. Increase its level by 3 to 6 dB."
    )
    assert render_response(Label.for_flaw("very_loud", "bass"), 0) == (
        "Verdict on the bass: far too loud. Reduce its level by 6 to 12 dB."
    )
    verbs = {
        "increase": r"\b(increase|raise|boost|turn it up|lift|bring the level up|push the \w+ up)\b",
        "decrease": r"\b(reduce|lower|cut|decrease|turn it down|attenuate|pull it down|trim|bring the level down)\b",
    }
    for category in ("quiet", "very_quiet", "loud", "very_loud"):
        low, high = sorted(abs(value) for value in CORRECTION_DB[category])
        for template_id in range(10):
            text = render_response(Label.for_flaw(category, "drums"), template_id)
            assert not re.search(r"(?<!\d)-\d", text)  # magnitudes, never negative numbers
            assert re.search(rf"\b{low}\b.*\b{high} dB", text), text
            direction = Label.for_flaw(category, "drums").direction
            assert re.search(verbs[direction], text.lower()), text
            other = "decrease" if direction == "increase" else "increase"
            assert not re.search(verbs[other], text.lower()), text


def test_severity_wording_differs_between_mild_and_severe():
    for mild, severe in (("quiet", "very_quiet"), ("loud", "very_loud")):
        for template_id in range(10):
            mild_text = RESPONSE_TEMPLATES[mild][template_id]
            severe_text = RESPONSE_TEMPLATES[severe][template_id]
            assert mild_text != severe_text
    assert "a little too quiet" in RESPONSE_TEMPLATES["quiet"][0]
    assert "far too quiet" in RESPONSE_TEMPLATES["very_quiet"][0]


def test_render_instruction():
    text = render_instruction(0, 10.0, ["vocals", "other", "bass", "drums"], "drums")
    assert text == (
        "Here is a 10-second mix of bass, drums, other instruments and vocals. Take the drums as "
        "correctly set. Is another stem too loud or too quiet, and by how many dB should it change?"
    )
    assert "7.5 s of music with drums and vocals." in render_instruction(1, 7.5, ["drums", "vocals"], "vocals")
    for template_id in range(10):
        text = render_instruction(template_id, 5.0, STEMS, "bass")
        assert "5" in text and "bass" in text and "{" not in text
        assert "5.0" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 10.0, STEMS, "drums"), "template_id"),
        ((0, 10.0, STEMS, "other"), "anchor"),
        ((0, 10.0, ["bass", "guitar"], "bass"), "unknown stems"),
        ((0, 0.0, STEMS, "bass"), "duration_s"),
    ],
)
def test_render_instruction_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        render_instruction(*args)


def test_render_response_rejects_bad_arguments():
    with pytest.raises(ValueError, match="template_id"):
        render_response(Label("no_error"), 10)
    with pytest.raises(ValueError, match="does not fit"):
        render_response(Label("quiet", "bass", (-6, -3)), 0)


def flaw(category, stem, correction=None):
    return Label(category, stem, correction if correction is not None else CORRECTION_DB[category])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # synonyms, case, punctuation, range forms
        ("VOCALS: boost 3-6 dB!!", flaw("quiet", "vocals")),
        ("The voice needs a lift of 3 to 6 dB.", flaw("quiet", "vocals")),
        ("vox too low , raise   3 – 6 dB", flaw("quiet", "vocals")),
        ("Turn the drum kit down 3—6 db", flaw("loud", "drums")),
        ("bring the kit up by between 6 and 12 decibels", flaw("very_quiet", "drums")),
        ("The bass guitar should be attenuated by 6 to 12 dB.", flaw("very_loud", "bass")),
        ("Bassline: lower it 3 dB to 6 dB.", flaw("loud", "bass")),
        ("Decrease the drums by three to six dB.", flaw("loud", "drums")),
        ("Cut the vocal between 6 and 12 dB; it overpowers everything.", flaw("very_loud", "vocals")),
        ("Pull the singer back by 3-6 dB.", flaw("loud", "vocals")),
        ("Make the bass louder by 3 to 6 dB", flaw("quiet", "bass")),
        ("Vocals: +6 to +12 dB.", flaw("very_quiet", "vocals")),
        ("Drums: -6 to -3 dB.", flaw("loud", "drums")),
        # the anchor named as a reference is not a second target
        ("Compared to the drums, the vocals are too quiet: raise them 3 to 6 dB.", flaw("quiet", "vocals")),
        ("The bass sits louder than the vocals; reduce it by 6-12 dB.", flaw("very_loud", "bass")),
        ("Raise the vocals by 3 to 6 dB so they sit with the drums.", flaw("quiet", "vocals")),
        ("Bring the bass up 3-6 dB to match the kick.", flaw("quiet", "bass")),
        ("The problem is with the vocals: raise them 3-6 dB.", flaw("quiet", "vocals")),
        # ranges that are not canonical keep their numbers; category by midpoint (boundary 6 dB)
        ("Raise the vocals by 4.5 dB.", flaw("quiet", "vocals", (4.5, 4.5))),
        ("Raise the vocals by 2 to 4 dB.", flaw("quiet", "vocals", (2, 4))),
        ("Lower the drums by 8 dB.", flaw("very_loud", "drums", (-8, -8))),
        ("Lower the drums by 4 to 10 dB.", flaw("very_loud", "drums", (-10, -4))),
        ("Lower the drums by 6 dB.", flaw("loud", "drums", (-6, -6))),
        ("The drums are far too loud; lower them by 6 dB.", flaw("very_loud", "drums", (-6, -6))),
        ("Raise the bass by 4,5 dB", flaw("quiet", "bass", (4.5, 4.5))),
        # no numbers: severity words decide, canonical range
        ("The vocals are far too quiet.", flaw("very_quiet", "vocals")),
        ("The drums are a bit too loud.", flaw("loud", "drums")),
        ("Turn down the bass.", flaw("loud", "bass")),
        ("The bass is buried.", flaw("very_quiet", "bass")),
        ("The mix has a bit too much bass.", flaw("loud", "bass")),
        ("The vocals are way too loud.", flaw("very_loud", "vocals")),
        ("The kick is much louder than it should be", flaw("very_loud", "drums")),
        # no error, in several phrasings
        ("The mix is well balanced.", Label("no_error")),
        ("No changes needed - every stem including the vocals sits well.", Label("no_error")),
        ("Leave the drums as they are.", Label("no_error")),
        ("NO GAIN ERROR.", Label("no_error")),
        ("Don't boost the vocals; they are fine.", Label("no_error")),
        ("There is no need to raise or lower the drums.", Label("no_error")),
        ("The vocals are neither too loud nor too quiet; the mix is balanced.", Label("no_error")),
        ("I would not change anything.", Label("no_error")),
        # negations and a no-error phrase next to a clear flaw
        ("No need to touch the drums, but raise the vocals 3-6 dB.", flaw("quiet", "vocals")),
        ("The drums are not loud enough.", flaw("quiet", "drums")),
        ("The mix is well balanced, though the vocals sit a bit low.", flaw("quiet", "vocals")),
        ("The bass drum is overpowering: reduce it by 6-12 dB.", flaw("very_loud", "drums")),
        ("The vocals need 3 to 6 dB more level.", flaw("quiet", "vocals")),
        ("Assistant: The vocals are slightly too loud. Lower them by 3 and 6 dB.</s>", flaw("loud", "vocals")),
    ],
)
def test_parser_reads_free_text(text, expected):
    assert parse_response(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "!!! 123 ...",
        "asdf qwerty",
        None,
        "The vocals.",  # a stem, no direction
        "Raise it by 3 to 6 dB.",  # a direction, no stem
        "Raise the vocals and the drums by 3 to 6 dB.",  # two target stems
        "Raise the vocals by 3 to 6 dB, or cut them by 3 to 6 dB.",  # two directions
        "The drums are too loud: increase them by 3-6 dB.",  # verb contradicts the state
        "The vocals are a little far too quiet.",  # conflicting severity, no numbers
        "Raise the bass by 500 dB.",  # implausible magnitude
        "Change the bass by 0 dB.",
        "The vocals are not too loud.",  # a negated state, nothing else
        "The mix is well balanced but raise the vocals and drums 3-6 dB.",  # flaw claim without one stem
    ],
)
def test_parser_returns_none_for_unclear_answers(text):
    assert parse_response(text) is None


def test_parser_never_raises_on_random_text():
    rng = np.random.default_rng(3)
    words = ["raise", "cut", "the", "vocals", "drums", "bass", "by", "3", "-6", "to", "+12", "db", "dB", "and",
             "too", "loud", "quiet", "not", "no", "change", "far", "a little", "–", ".", ",", "!!", "balanced", "0"]
    for _ in range(500):
        text = " ".join(rng.choice(words, size=int(rng.integers(0, 14))))
        result = parse_response(text)
        assert result is None or isinstance(result, Label)
        if result is not None and result.category != "no_error":
            assert result.stem in TARGET_STEMS
            low, high = result.correction_db
            assert low <= high and (low > 0 if result.direction == "increase" else high < 0)


def test_rejected_labels_differ_in_the_way_their_kind_says():
    rng = np.random.default_rng(0)
    seen: dict[str, int] = {}
    opposite = {"quiet": "loud", "loud": "quiet", "very_quiet": "very_loud", "very_loud": "very_quiet"}
    severity = {"quiet": "very_quiet", "very_quiet": "quiet", "loud": "very_loud", "very_loud": "loud"}
    for _ in range(40):
        for truth in ALL_LABELS:
            rejected, kind = make_rejected(truth, rng)
            assert kind in REJECTION_KINDS
            assert rejected != truth
            assert rejected == Label.for_flaw(rejected.category, rejected.stem)  # canonical ranges
            seen[kind] = seen.get(kind, 0) + 1
            if truth.category == "no_error":
                assert kind == "false_alarm" and rejected.category != "no_error"
            elif kind == "missed_flaw":
                assert rejected == Label("no_error")
            elif kind == "wrong_stem":
                assert rejected.category == truth.category and rejected.stem != truth.stem
            elif kind == "wrong_direction":
                assert rejected == Label.for_flaw(opposite[truth.category], truth.stem)
            elif kind == "wrong_severity":
                assert rejected == Label.for_flaw(severity[truth.category], truth.stem)
            else:
                pytest.fail(f"{kind} for a flaw")
    # 40 x 12 flaw labels: each of the 4 flaw kinds ~120 times; 40 false alarms
    assert seen["false_alarm"] == 40
    assert all(80 < seen[kind] < 160 for kind in ("wrong_stem", "wrong_direction", "wrong_severity", "missed_flaw"))


def test_rejected_is_deterministic_for_a_seed():
    first = [make_rejected(label, np.random.default_rng(5)) for label in ALL_LABELS]
    again = [make_rejected(label, np.random.default_rng(5)) for label in ALL_LABELS]
    assert first == again


def test_rejected_answers_parse_to_their_labels():
    rng = np.random.default_rng(1)
    for truth in ALL_LABELS:
        rejected, _ = make_rejected(truth, rng)
        assert parse_response(render_response(rejected, int(rng.integers(10)))) == rejected


# --------------------------------------------------------------------------------------------
# Compound answers (issue 11, item 5): a fine-tuned 7B says which stems are balanced, then which
# one is off and what to do. A stem called balanced is not a target; the instruction decides.

PAPER_STYLE_FLAW = {
    # the shape of the paper's example answer ("The {target_stem} is a little too quiet. Increase the
    # {target_stem} level between {min_gain_db} and {max_gain_db} dB to balance the mix."), several wordings
    "quiet": (
        "The {t} is a bit too quiet. Increase the {t} level between {lo} and {hi} dB to achieve proper balance.",
        "The {t} is a little too quiet. Increase the {t} level between {lo} and {hi} dB to balance the mix.",
        "The {t} is slightly too quiet. Raise the {t} by {lo} to {hi} dB.",
        "The {t} sits a bit low; boost it by {lo}-{hi} dB to achieve a balanced mix.",
    ),
    "very_quiet": (
        "The {t} is much too quiet. Increase the {t} level between {lo} and {hi} dB to achieve proper balance.",
        "The {t} is far too quiet. Increase the {t} level between {lo} and {hi} dB to balance the mix.",
        "The {t} is barely audible. Raise the {t} by {lo} to {hi} dB.",
        "The {t} is buried; boost it by {lo}-{hi} dB to achieve a balanced mix.",
    ),
    "loud": (
        "The {t} is a bit too loud. Decrease the {t} level between {lo} and {hi} dB to achieve proper balance.",
        "The {t} is a little too loud. Reduce the {t} level between {lo} and {hi} dB to balance the mix.",
        "The {t} is slightly too loud. Lower the {t} by {lo} to {hi} dB.",
        "The {t} is somewhat too prominent; cut it by {lo}-{hi} dB to achieve a balanced mix.",
    ),
    "very_loud": (
        "The {t} is much too loud. Decrease the {t} level between {lo} and {hi} dB to achieve proper balance.",
        "The {t} is far too loud. Reduce the {t} level between {lo} and {hi} dB to balance the mix.",
        "The {t} overpowers the mix. Lower the {t} by {lo} to {hi} dB.",
        "The {t} is way too loud; cut it by {lo}-{hi} dB to achieve a balanced mix.",
    ),
}
BALANCED_SENTENCES = (
    "The {b} is properly balanced in the mix.",
    "The {b} are properly balanced in the mix.",
    "The {b} sounds well balanced.",
    "The {b} is perfectly balanced.",
    "The {b} sits well in the mix.",
    "The {b} is at the right level.",
    "The {b} is fine.",
    "The level of the {b} is correct and needs no adjustment.",
    "Leave the {b} as it is.",
)


def compound_answers(label):
    """(text, note) for one flaw label: balanced sentences about 1 or 2 other stems, placed before,
    after or around the paper-style flaw sentences, and the same joined with ', but' / 'while'."""
    lo, hi = sorted(abs(value) for value in label.correction_db)
    others = [stem for stem in TARGET_STEMS if stem != label.stem]
    for flaw_template in PAPER_STYLE_FLAW[label.category]:
        flaw_text = flaw_template.format(t=label.stem, lo=lo, hi=hi)
        for balanced_template in BALANCED_SENTENCES:
            one = balanced_template.format(b=others[0])
            both = balanced_template.format(b=f"{others[0]} and the {others[1]}").replace(" is ", " are ")
            yield f"{one} {flaw_text}", "balanced first"
            yield f"{flaw_text} {one}", "balanced last"
            yield f"{both} {flaw_text}", "two balanced stems"
            yield f"{one} {flaw_text} {balanced_template.format(b=others[1])}", "balanced around"
        first_clause = flaw_text.split(". ")[0].rstrip(".")
        rest = flaw_text[len(first_clause) + 1:].strip()
        yield f"The {others[0]} is properly balanced, but {first_clause[0].lower()}{first_clause[1:]}. {rest}", "but"
        yield f"While the {others[1]} is well balanced, {first_clause[0].lower()}{first_clause[1:]}. {rest}", "while"


FLAW_LABELS = [label for label in ALL_LABELS if label.category != "no_error"]


def test_the_papers_compound_example_reads_as_the_flaw_it_states():
    text = ("The vocals is properly balanced in the mix. The bass is a bit too quiet. Increase the bass level "
            "between 3 and 6 dB to achieve proper balance.")
    assert parse_response(text) == Label("quiet", "bass", (3, 6))


@pytest.mark.parametrize("label", FLAW_LABELS, ids=lambda label: f"{label.category}-{label.stem}")
def test_every_compound_shape_reads_as_its_flaw(label):
    answers = list(compound_answers(label))
    assert len(answers) == 4 * (4 * len(BALANCED_SENTENCES) + 2)
    wrong = [(note, text, parse_response(text)) for text, note in answers if parse_response(text) != label]
    assert wrong == []


@pytest.mark.parametrize("label", FLAW_LABELS, ids=lambda label: f"{label.category}-{label.stem}")
def test_our_templates_still_round_trip_after_a_balanced_stem_sentence(label):
    others = [stem for stem in TARGET_STEMS if stem != label.stem]
    for template_id in range(10):
        text = render_response(label, template_id)
        assert parse_response(f"The {others[0]} is properly balanced in the mix. {text}") == label, text
        assert parse_response(f"{text} The {others[1]} and {others[0]} are well balanced.") == label, text


@pytest.mark.parametrize(
    "text",
    [
        "The vocals is properly balanced in the mix.",
        "The vocals is properly balanced in the mix. The drums is properly balanced in the mix.",
        "The bass and the drums are properly balanced in the mix. No adjustment is needed.",
        "The mix is properly balanced. No adjustments are necessary.",
        "All stems are properly balanced in the mix.",
        "The drums sit well, the bass is at the right level and the vocals are fine.",
        "Using the drums as the reference, the vocals are properly balanced.",
        "The vocals are balanced correctly relative to the drums; nothing needs to change.",
    ],
)
def test_answers_that_only_call_stems_balanced_are_no_error(text):
    assert parse_response(text) == Label("no_error")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The drums sit well in the mix, but the vocals are slightly too quiet. Raise the vocals by 3 to 6 dB.",
         flaw("quiet", "vocals")),
        ("Using the drums as the reference, the vocals are properly balanced, but the bass is buried. "
         "Boost the bass by 6 to 12 dB.", flaw("very_quiet", "bass")),
        ("The vocals are balanced correctly relative to the drums. The bass is too loud; reduce it by 3-6 dB.",
         flaw("loud", "bass")),
        ("The drums are properly balanced. The bass is too quiet compared to the drums; raise it by 4 dB.",
         flaw("quiet", "bass", (4, 4))),
        # severity words in a balanced clause do not leak into the flaw's severity
        ("The vocals are very well balanced. The bass is a bit too quiet.", flaw("quiet", "bass")),
        ("The drums are perfectly balanced and sit nicely. The vocals are much too loud.", flaw("very_loud", "vocals")),
    ],
)
def test_compound_answers_in_other_shapes(text, expected):
    assert parse_response(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # the same stem called balanced and then targeted
        "The vocals is properly balanced in the mix. The vocals is a bit too quiet. Increase the vocals level "
        "between 3 and 6 dB to achieve proper balance.",
        "The bass is properly balanced in the mix. Increase the bass level between 3 and 6 dB.",
        "The drums sit well in the mix, but reduce the drums by 6 to 12 dB.",
        # two flaws, or two directions, after the balanced stem
        "The vocals is properly balanced in the mix. The bass is a bit too quiet. The drums are too loud.",
        "The vocals is properly balanced in the mix. Increase the bass level between 3 and 6 dB. "
        "Decrease the bass level between 3 and 6 dB.",
        # balanced, then a direction with no stem
        "The vocals are properly balanced, but too loud.",
        # the balance negated is not a no-error statement
        "The mix is not properly balanced.",
        "The bass is not at the right level.",
    ],
)
def test_compound_answers_that_contradict_themselves_are_refused(text):
    assert parse_response(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The vocals is properly balanced in the mix and the bass is a bit too quiet. Increase the bass level "
         "between 3 and 6 dB to achieve proper balance.", flaw("quiet", "bass")),
        ("The drums sound good and the vocals are too loud; reduce the vocals by 6 to 12 dB.", flaw("very_loud", "vocals")),
        ("Leave the drums as they are and cut the bass by 3 to 6 dB.", flaw("loud", "bass")),
        ("The bass and the drums are properly balanced. The vocals are too loud; cut them by 3 to 6 dB.", flaw("loud", "vocals")),
        ("The bass and the drums are properly balanced and the vocals are fine.", Label("no_error")),
    ],
)
def test_compound_answers_joined_by_and(text, expected):
    assert parse_response(text) == expected


def test_a_stem_called_balanced_and_off_in_one_sentence_is_refused():
    assert parse_response("The drums are fine and the drums are too loud.") is None
    assert parse_response("Leave the bass as it is and cut the bass by 3 to 6 dB.") is None
