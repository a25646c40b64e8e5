"""Instruction and response templates, the response parser and DPO rejected answers.

The model is asked a question rendered from one of ``INSTRUCTION_TEMPLATES`` and taught to answer
with one of ``RESPONSE_TEMPLATES[category]``. ``parse_response`` turns an answer (a rendered
template, or free text a fine-tuned LLM produced) back into a :class:`~mixcritic.labels.Label`;
``parse_response(render_response(label, t)) == label`` holds for every template, stem and
category. The parsing rules, the category mapping and the DPO rejection kinds are described in
``docs/templates.md``. All wording here is this project's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mixcritic.labels import CATEGORIES, CORRECTION_DB, STEMS, TARGET_STEMS, Label

TEMPLATE_VERSION = "1"
"""Bump whenever a template's wording or the parser's rules change (checkpoints record it)."""

INSTRUCTION_TEMPLATES: tuple[str, ...] = (
    "Here is a {duration_sec}-second mix of {stems_present}. Take the {anchor_stem} as correctly "
    "set. Is another stem too loud or too quiet, and by how many dB should it change?",
    "Attached: {duration_sec} s of music with {stems_present}. The {anchor_stem} level is the "
    "reference. Which stem, if any, is out of balance, and what gain change would fix it?",
    "You are checking the balance of a mix made of {stems_present}, {duration_sec} seconds long. "
    "Assume the {anchor_stem} sits where it should. Tell me which stem to adjust and by how much.",
    "Mix check, {duration_sec} seconds, stems: {stems_present}. Using the {anchor_stem} as the "
    "anchor, say whether any stem needs a gain change and give the range in dB.",
    "This clip lasts {duration_sec} seconds and contains {stems_present}. The {anchor_stem} is at "
    "the right level. Is the balance right, or should a stem be raised or lowered?",
    "As a mixing engineer, judge this {duration_sec}-second mix ({stems_present}) against the "
    "{anchor_stem}. Name the stem that is off, if one is, and the correction in dB.",
    "In the following {duration_sec} s of audio you will hear {stems_present}. Keeping the "
    "{anchor_stem} fixed, what single level change, if any, would improve the balance?",
    "Balance review: the mix contains {stems_present} and runs {duration_sec} seconds. Treat the "
    "{anchor_stem} as the reference level. Does any stem need more or less gain?",
    "Given this {duration_sec}-second recording with {stems_present}, and trusting the level of "
    "the {anchor_stem}, is any stem too prominent or too weak? Suggest a fix in dB.",
    "Please evaluate the relative levels in this {duration_sec} s mix of {stems_present}. The "
    "{anchor_stem} is correct as it is. Which stem, if any, should move, and by how many dB?",
)
"""Questions put to the model: placeholders ``{duration_sec}``, ``{stems_present}``, ``{anchor_stem}``."""

RESPONSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "no_error": (
        "The mix is well balanced; no stem needs a level change.",
        "Every stem sits at a sensible level. No gain change is needed.",
        "No balance problem here: leave the levels as they are.",
        "All stems are within a few dB of where they belong, so nothing needs fixing.",
        "This mix is in balance. I would not touch any fader.",
        "No correction required: the levels already work together.",
        "The balance is right; keep every stem where it is.",
        "Nothing stands out as too loud or too quiet, so the mix can stay as it is.",
        "Levels look good across the board; no adjustment is needed.",
        "I hear no gain error: each stem is balanced against the others.",
    ),
    "quiet": (
        "Verdict on the {target_stem}: a little too quiet. Increase its level by {min_gain_db} to {max_gain_db} dB.",
        "Slightly too quiet: the {target_stem}. Raise that stem by {min_gain_db} to {max_gain_db} dB.",
        "I would boost the {target_stem} by {min_gain_db}-{max_gain_db} dB, as this stem sits a bit low in the mix.",
        "The mix needs a touch more {target_stem}: bring the level up by {min_gain_db} to {max_gain_db} dB.",
        "Gain advice: increase the {target_stem} by {min_gain_db} to {max_gain_db} dB. This stem is somewhat too quiet.",
        "The {target_stem} part lacks a little presence. Turn it up between {min_gain_db} and {max_gain_db} dB.",
        "A small fix: raise the {target_stem} by {min_gain_db} to {max_gain_db} dB, since this stem is mildly under-mixed.",
        "The {target_stem} stem is a bit too soft next to the reference. Boost it by {min_gain_db} to {max_gain_db} dB.",
        "Slightly under-mixed: the {target_stem}. Lift this stem by {min_gain_db}-{max_gain_db} dB.",
        "To even out the mix, push the {target_stem} up by between {min_gain_db} and {max_gain_db} dB; "
        "right now this stem is a little too quiet.",
    ),
    "very_quiet": (
        "Verdict on the {target_stem}: far too quiet. Increase its level by {min_gain_db} to {max_gain_db} dB.",
        "Much too quiet: the {target_stem}. Raise that stem by {min_gain_db} to {max_gain_db} dB.",
        "The {target_stem} stem is buried in the mix; boost it by {min_gain_db}-{max_gain_db} dB.",
        "This mix badly lacks {target_stem}: bring the level up by {min_gain_db} to {max_gain_db} dB.",
        "Gain advice: increase the {target_stem} by {min_gain_db} to {max_gain_db} dB. This stem is barely audible.",
        "The {target_stem} part is way too low. Turn it up between {min_gain_db} and {max_gain_db} dB.",
        "A big fix is needed: raise the {target_stem} by {min_gain_db} to {max_gain_db} dB, since this stem "
        "is heavily under-mixed.",
        "The {target_stem} stem is much too soft. Boost it by {min_gain_db} to {max_gain_db} dB.",
        "Badly under-mixed: the {target_stem}. Lift this stem by {min_gain_db}-{max_gain_db} dB.",
        "To even out the mix, push the {target_stem} up by between {min_gain_db} and {max_gain_db} dB; "
        "right now this stem is nearly lost.",
    ),
    "loud": (
        "Verdict on the {target_stem}: a little too loud. Reduce its level by {min_gain_db} to {max_gain_db} dB.",
        "Slightly too loud: the {target_stem}. Lower that stem by {min_gain_db} to {max_gain_db} dB.",
        "I would cut the {target_stem} by {min_gain_db}-{max_gain_db} dB, as this stem sits a bit high in the mix.",
        "The mix has a touch too much {target_stem}: bring the level down by {min_gain_db} to {max_gain_db} dB.",
        "Gain advice: decrease the {target_stem} by {min_gain_db} to {max_gain_db} dB. This stem is somewhat too loud.",
        "The {target_stem} part is a little too prominent. Turn it down between {min_gain_db} and {max_gain_db} dB.",
        "A small fix: attenuate the {target_stem} by {min_gain_db} to {max_gain_db} dB, since this stem is "
        "mildly over-mixed.",
        "The {target_stem} stem is a bit too hot next to the reference. Pull it down by {min_gain_db} to "
        "{max_gain_db} dB.",
        "Slightly over-mixed: the {target_stem}. Trim this stem by {min_gain_db}-{max_gain_db} dB.",
        "To even out the mix, lower the {target_stem} by between {min_gain_db} and {max_gain_db} dB; "
        "right now this stem is a little too loud.",
    ),
    "very_loud": (
        "Verdict on the {target_stem}: far too loud. Reduce its level by {min_gain_db} to {max_gain_db} dB.",
        "Much too loud: the {target_stem}. Lower that stem by {min_gain_db} to {max_gain_db} dB.",
        "The {target_stem} stem overpowers the mix; cut it by {min_gain_db}-{max_gain_db} dB.",
        "This mix has far too much {target_stem}: bring the level down by {min_gain_db} to {max_gain_db} dB.",
        "Gain advice: decrease the {target_stem} by {min_gain_db} to {max_gain_db} dB. This stem dominates "
        "everything else.",
        "The {target_stem} part is way too prominent. Turn it down between {min_gain_db} and {max_gain_db} dB.",
        "A big fix is needed: attenuate the {target_stem} by {min_gain_db} to {max_gain_db} dB, since this "
        "stem is heavily over-mixed.",
        "The {target_stem} stem is much too hot. Pull it down by {min_gain_db} to {max_gain_db} dB.",
        "Badly over-mixed: the {target_stem}. Trim this stem by {min_gain_db}-{max_gain_db} dB.",
        "To even out the mix, lower the {target_stem} by between {min_gain_db} and {max_gain_db} dB; "
        "right now this stem is drowning out the rest.",
    ),
}
"""Answers per category: placeholders ``{target_stem}``, ``{min_gain_db}``, ``{max_gain_db}``
(magnitudes; the verb carries the direction). ``no_error`` answers have no placeholders."""

STEM_DISPLAY_NAMES: dict[str, str] = {
    "bass": "bass",
    "drums": "drums",
    "other": "other instruments",
    "vocals": "vocals",
}
"""How each stem is written in instructions and responses."""

REJECTION_KINDS: tuple[str, ...] = ("wrong_stem", "wrong_direction", "wrong_severity", "missed_flaw", "false_alarm")
"""Kinds of DPO rejected answers; see :func:`make_rejected`."""

MAX_PARSED_GAIN_DB = 60.0
"""A stated correction larger than this is not a plausible gain advice: the parser returns None."""


# --------------------------------------------------------------------------------------------
# Rendering


def format_duration_s(duration_s: float) -> str:
    """``10.0 -> '10'``, ``7.5 -> '7.5'``, ``2.345 -> '2.35'`` (two decimals at most)."""
    return f"{round(float(duration_s), 2):g}"


def format_stems(stems: Iterable[str]) -> str:
    """Readable list in the canonical stem order: ``'bass, drums, other instruments and vocals'``."""
    stems = {stems} if isinstance(stems, str) else set(stems)
    unknown = stems - set(STEMS)
    if unknown:
        raise ValueError(f"unknown stems {sorted(unknown)}; expected some of {STEMS}")
    names = [STEM_DISPLAY_NAMES[stem] for stem in STEMS if stem in stems]
    if not names:
        raise ValueError("stems_present is empty")
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def render_instruction(template_id: int, duration_s: float, stems_present: Iterable[str], anchor_stem: str) -> str:
    """The question for one sample. ``anchor_stem`` must be bass, drums or vocals; ``stems_present``
    is rendered as given, in the canonical stem order (it is not required to hold the anchor, so
    that a tokenizer corpus can render every combination)."""
    template = _pick(INSTRUCTION_TEMPLATES, template_id, "instruction")
    stems_present = tuple(stems_present)
    if anchor_stem not in TARGET_STEMS:
        raise ValueError(f"anchor_stem {anchor_stem!r} cannot be the anchor; expected one of {TARGET_STEMS}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s!r}")
    return template.format(
        duration_sec=format_duration_s(duration_s),
        stems_present=format_stems(stems_present),
        anchor_stem=STEM_DISPLAY_NAMES[anchor_stem],
    )


def render_response(label: Label, template_id: int) -> str:
    """The answer text for ``label`` using ``RESPONSE_TEMPLATES[label.category][template_id]``.

    The correction's magnitudes fill ``{min_gain_db}``/``{max_gain_db}``; its sign must match
    the category's direction (positive for quiet categories, negative for loud ones).
    """
    template = _pick(RESPONSE_TEMPLATES[label.category], template_id, f"{label.category} response")
    if label.category == "no_error":
        return template
    low, high = label.correction_db
    if low > high or (low <= 0 if label.direction == "increase" else high >= 0):
        raise ValueError(f"correction_db {label.correction_db} does not fit category {label.category!r}")
    magnitudes = sorted((abs(low), abs(high)))
    return template.format(
        target_stem=STEM_DISPLAY_NAMES[label.stem],
        min_gain_db=_format_number(magnitudes[0]),
        max_gain_db=_format_number(magnitudes[1]),
    )


def _pick(templates: tuple[str, ...], template_id: int, what: str) -> str:
    if not 0 <= int(template_id) < len(templates) or int(template_id) != template_id:
        raise ValueError(f"{what} template_id must be 0..{len(templates) - 1}, got {template_id!r}")
    return templates[int(template_id)]


def _format_number(value: float) -> str:
    return f"{round(float(value), 2):g}"


# --------------------------------------------------------------------------------------------
# Parsing

_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}  # fmt: skip

_STEM_PATTERNS: dict[str, str] = {
    # "bass drum" is a kick: matched as drums, and excluded from bass.
    "drums": r"drums?|drum ?kit|kit|percussion|kick(?: drum)?s?|snares?|hi-?hats?|cymbals?|bass drums?",
    "bass": r"bass(?:es)?(?! drums?\b)(?: guitar)?|bass-?line|bassline",
    "vocals": r"vocals?|vox|voices?|singers?|singing|lead vocals?|vocalists?",
}
_STEM_RE = {stem: re.compile(rf"\b(?:{pattern})\b") for stem, pattern in _STEM_PATTERNS.items()}
_ANY_STEM = "|".join(f"(?:{pattern})" for pattern in _STEM_PATTERNS.values())
_REFERENCE_RE = re.compile(
    rf"\b(?:relative to|compared (?:to|with)|with respect to|against|versus|vs\.?|than|next to|over|under|"
    rf"above|below|behind|underneath|anchor(?:ed)? (?:on|to)|reference|with|match(?:es|ing)?|"
    rf"(?:to|at) the level of)\s+(?:the\s+)?(?:{_ANY_STEM})\b"
    rf"|\b(?:using|use|taking|take|treating|treat|with|keeping|keep)\s+(?:the\s+)?(?:{_ANY_STEM})\s+as\s+"
    r"(?:the\s+|a\s+|our\s+|your\s+)?(?:reference|anchor)\b"
)
"""A stem named as the reference ('louder than the drums') is the anchor, not the target."""

_UP_VERBS = re.compile(
    r"\b(?:increas|boost|rais|lift|amplif)\w*"
    r"|\b(?:turn|bring|push|crank|nudge|dial|move|bump|fade)\w*\b(?:\s+[\w-]+){0,3}?\s+up\b"
    r"|\bmake\b(?:\s+[\w-]+){0,3}?\s+louder\b"
    r"|\badd(?:s|ed|ing)?\s+(?:about\s+|around\s+|roughly\s+)?\+?\d"
)
_DOWN_VERBS = re.compile(
    r"\b(?:reduc|decreas|attenuat)\w*"
    r"|\blower(?:s|ed|ing)?\b(?!\s+(?:than|in|end|register|frequenc\w*|notes?)\b)"
    r"|\bcut(?:s|ting)?\b(?!\s+through)"
    r"|\btrim(?:s|med|ming)?\b|\btam(?:e|es|ed|ing)\b|\bdip(?:s|ped|ping)?\b"
    r"|\bdrop(?:s|ped|ping)?\b(?!\s+out)"
    r"|\b(?:turn|bring|pull|take|dial|knock|ease|nudge|move|fade|back)\w*\b(?:\s+[\w-]+){0,3}?\s+down\b"
    r"|\b(?:pull|dial|ease|back)\w*\b(?:\s+[\w-]+){0,3}?\s+(?:back|off)\b"
    r"|\bmake\b(?:\s+[\w-]+){0,3}?\s+(?:quieter|softer)\b"
)
_TOO_QUIET = re.compile(
    r"\btoo (?:quiet|soft|low|weak|faint|thin)\b|\bburied\b|\bbarely audible\b|\bnearly lost\b|\blost in\b"
    r"|\bunder-?mixed\b|\blacks?\b|\blacking\b|\bnot loud enough\b|\bhard to hear\b|\b(?:quieter|softer) than\b"
    r"|\b(?<!not )(?:quiet|soft|weak)\b|\b(?:sits?|is) (?:a bit |a little |slightly |too |way |far )?low\b"
    r"|\bmore\b(?:\s+[\w-]+){0,2}?\s+(?:" + _ANY_STEM + r")\b|\bmore (?:level|gain|volume)\b"
)
_TOO_LOUD = re.compile(
    r"\btoo (?:loud|hot|strong|prominent|present|high|much)\b|\boverpower\w*|\bdominat\w*|\bdrown\w*"
    r"|\bover-?mixed\b|\blouder than\b|\b(?<!not )loud\b(?! enough)|\bhot\b"
    r"|\b(?:sits?|is) (?:a bit |a little |slightly |too |way |far )?high\b|\bless (?:level|gain|volume)\b"
)
_SEVERE = re.compile(
    r"\b(?:far|much|way) (?:too|more|less|louder|quieter|softer|lower|higher)\b|\bby far\b"
    r"|\b(?:very|really|extremely|seriously|significantly|substantially|heavily|badly|massively"
    r"|hugely|severely|overly|big|large|a lot)\b|\bbarely audible\b|\bburied\b|\bnearly lost\b"
    r"|\boverpower\w*|\bdominat\w*|\bdrown\w*"
)
_MILD = re.compile(
    r"\b(?:a little|a bit|a touch|slightly|somewhat|mildly|a tad|marginally|a shade|small|subtly|a hair"
    r"|gently|modestly)\b"
)
_BALANCED_ADVERBS = (
    r"(?:well|nicely|properly|perfectly|correctly|evenly|appropriately|fairly|reasonably|quite|very|pretty|already"
    r"|good and)"
)
_NO_ERROR = re.compile(
    r"\bwell[- ]balanced\b|\bin (?:good |proper |perfect )?balance\b"
    rf"|\b(?:is|are|sounds?|looks?|seems?|already|nicely|remains?|stays?|feels?)(?: {_BALANCED_ADVERBS}){{0,2}} balanced\b"
    r"|\b(?<!not )(?<!n't )(?<!never )(?:properly|perfectly|correctly|appropriately) (?:balanced|mixed|leveled|levelled|set|placed)\b"
    r"|\b(?<!not )(?<!n't )(?<!never )balanced (?:properly|correctly|perfectly|well|nicely)\b"
    r"|\b(?<!not )(?<!n't )(?:at|sits? at|is at|are at) (?:the|a|an) (?:right|correct|proper|appropriate|good|suitable|ideal) "
    r"(?:level|volume)\b"
    r"|\b(?<!not )(?<!n't )in (?:a|the) (?:good|right) (?:place|spot)\b"
    r"|\b(?<!not )(?<!n't )where (?:it|they) (?:should be|belongs?)\b"
    r"|\b(?<!not )(?<!n't )sits? (?:well|nicely|right)\b(?! (?:below|above|under|over|behind|in front)\b)"
    r"|\bno (?:stem|gain|level|balance|volume|mix|mixing)?\s?(?:change|adjustment|correction|fix|problem|issue"
    r"|error|flaw|imbalance)s?\b"
    r"|\bno stem (?:needs|is|requires)\b|\bnothing (?:needs|stands out|to (?:change|fix)|is (?:wrong|off))\b"
    r"|\b(?:leave|keep)\b.{0,40}?\b(?:as (?:it is|they are|is)|where (?:it is|they are)|unchanged|alone)\b"
    r"|\b(?:can|should) stay as\b|\bnot touch\b|\bsits? at a sensible level\b|\bfine as\b"
    r"|\b(?:is|are|sounds?|sits?|looks?) (?:fine|good|right|ok|okay|correct)\b"
    r"|\b(?:does not|doesn't|do not|don't|would not|wouldn't|need not|needn't) (?:need |require )?(?:any )?(?:to )?(?:be )?"
    r"(?:change|adjust|touch|fix|move)"
    r"|\bno need to\b|\bnothing to (?:change|fix|adjust)\b"
    r"|\b(?:levels?|balance) (?:is|are|look|looks|sound|sounds|already) (?:right|good|fine|correct|spot on|work)"
)
_NEGATED_VERB = re.compile(
    r"\b(?:don't|do not|doesn't|does not|no need to|needn't|need not|shouldn't|should not|never|wouldn't|would not)"
    r"(?:\s+(?:need|needs|have|has|to|be|any|further))*\s+[\w-]+(?:\s+(?:or|nor)\s+[\w-]+)*"
    rf"(?:\s+(?:the\s+)?(?:{_ANY_STEM})\b)?"
)
"""'Don't boost', 'no need to raise or lower the drums': a negated verb and its stem state nothing."""
_NEGATED_STATE = re.compile(
    r"\b(?:not|isn't|aren't|never|neither|nor)\s+(?:too\s+|overly\s+|very\s+|at all\s+|a bit\s+)?"
    r"(?:loud|quiet|soft|hot|low|high|weak|faint|buried|prominent|overpowering|dominant|under-?mixed|over-?mixed)\w*\b"
    r"(?!\s+enough)"
)
"""'not too loud', 'neither too loud nor too quiet': a negated state states no direction."""
_NUMBER = r"([+-]?\d+(?:\.\d+)?)"
_UNIT = r"(?:db|decibels?)\b"
_RANGE_RE = re.compile(
    rf"{_NUMBER}\s*(?:{_UNIT})?\s*(?:to|and|-|~|through)\s*{_NUMBER}\s*{_UNIT}"
    rf"|\b(?:by|between|from)\s+(?:about\s+|around\s+|roughly\s+)?{_NUMBER}\s*(?:to|and|-|~)\s*{_NUMBER}\b"
)
_SINGLE_RE = re.compile(rf"{_NUMBER}\s*{_UNIT}")


def parse_response(text: str) -> Label | None:
    """Read a response back into a Label, or None when it does not say one clear thing.

    Rules (details in docs/templates.md): a clause that only says some stems are balanced ("the
    vocals is properly balanced in the mix. the bass is too quiet ...") sets those stems aside:
    the rest of the answer decides, and a flaw on a stem just called balanced is a contradiction
    (None). Then one target stem must be named (a stem named as the reference, "than the drums",
    does not count; two target stems -> None); the direction comes from verbs
    (increase/boost/raise/bring up... vs reduce/lower/cut/turn down...), else from state words
    (too quiet/buried vs too loud/overpowering), else from the numbers' signs; any conflict ->
    None. The category is the direction plus the stated range's midpoint (below 6 dB ->
    quiet/loud, above -> very_quiet/very_loud, exactly 6 -> severity words, then the milder one);
    without numbers, severity words decide and ``correction_db`` is the category's range. A
    no-error statement ("well balanced", "no change needed") gives no_error unless the text also
    names one stem and a direction (then it is that flaw); with a direction and numbers but no
    single stem -> None. Negated verbs and states ("don't boost", "not too loud") say nothing.
    """
    if not isinstance(text, str):
        return None
    norm = _normalise(text)
    if not re.search(r"[a-z]", norm):
        return None
    balanced, rest = _set_aside_balanced_stems(norm)
    if not balanced:
        return _parse_normalised(norm)
    label = _parse_normalised(rest)
    if label is None:
        # what is left states no direction: the answer only says that stems are balanced
        asserted = _NEGATED_STATE.sub(" ", _NEGATED_VERB.sub(" ", rest))
        return Label("no_error") if _find_direction(asserted, _find_range(rest)[1]) is None else None
    if label.stem in balanced:
        return None  # "the bass is properly balanced ... raise the bass": contradicts itself
    return label


_CLAUSE_BREAK_RE = re.compile(
    r"[.!?;:](?=\s|$)|,|\b(?:but|while|whilst|whereas|although|though|however|yet|and also)\b"
)
"""Where a compound answer's clauses meet: sentence ends, commas and contrasting conjunctions."""
_AND_CLAUSE_RE = re.compile(
    rf"\band\b(?=\s+(?:the\s+)?(?:{_ANY_STEM})\s+(?:is|are|sits?|sounds?|seems?|needs?|should|could|must|lacks?"
    r"|overpowers?|dominates?|drowns?)\b)"
    r"|\band\b(?=\s+(?:increase|raise|boost|lift|reduce|lower|cut|decrease|attenuate|trim|turn|bring|push|pull)\b)"
)
"""'... balanced in the mix and the bass is too quiet', '... as they are and cut the bass': an 'and'
that starts a new clause about a stem or a new instruction."""


def _set_aside_balanced_stems(norm: str) -> tuple[set[str], str]:
    """Stems that a clause only calls balanced ("the vocals is properly balanced in the mix"),
    and the text without those clauses (the rest kept verbatim, so ranges stay intact).

    A clause counts when it makes a no-error statement, names at least one stem and states no
    direction; any other clause stays. A clause with a no-error statement and a direction is
    looked at again, cut before an 'and' that starts a clause about a stem."""
    balanced: set[str] = set()
    kept: list[str] = []
    for clause in _cut(norm, _CLAUSE_BREAK_RE):
        stems = _balanced_only(clause)
        if stems is None and _NO_ERROR.search(clause):
            parts = _cut(clause, _AND_CLAUSE_RE)
            found = [_balanced_only(part) for part in parts]
            if len(parts) > 1 and any(found):
                for part, part_stems in zip(parts, found):
                    balanced |= part_stems or set()
                    kept.append(" . " if part_stems else part)
                continue
        balanced |= stems or set()
        kept.append(" . " if stems else clause)
    return balanced, re.sub(r"\s+", " ", "".join(kept)).strip()


def _cut(text: str, breaks: re.Pattern) -> list[str]:
    """``text`` cut at the start of each match of ``breaks`` (the pieces join back to ``text``)."""
    starts = [0] + [match.start() for match in breaks.finditer(text) if match.start() > 0] + [len(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:]) if b > a]


def _balanced_only(clause: str) -> set[str] | None:
    """The stems a clause calls balanced when that is all it says (no direction); else None."""
    if not _NO_ERROR.search(clause):
        return None
    asserted = _NEGATED_STATE.sub(" ", _NEGATED_VERB.sub(" ", clause))
    stems = _stems_named(asserted) or _stems_named(clause)
    if stems and _find_direction(asserted, _find_range(clause)[1]) is None:
        return stems
    return None


def _parse_normalised(norm: str) -> Label | None:
    """The rules of :func:`parse_response` after normalisation, on one answer or what is left of it."""
    if not re.search(r"[a-z]", norm):
        return None
    no_error = bool(_NO_ERROR.search(norm))
    asserted = _NEGATED_STATE.sub(" ", _NEGATED_VERB.sub(" ", norm))
    stem = _find_stem(asserted)
    magnitudes, sign = _find_range(norm)
    direction = _find_direction(asserted, sign)
    has_direction = direction in ("increase", "decrease")
    if no_error and not (isinstance(stem, str) and has_direction):
        # "balanced, but raise something by 3-6 dB" without one clear stem is no clear answer
        return None if has_direction and magnitudes is not None else Label("no_error")
    if not isinstance(stem, str) or direction in (None, "conflict"):
        return None
    if magnitudes is None:
        category = _category_from_words(norm, direction)
        return None if category is None else Label.for_flaw(category, stem)
    low, high = magnitudes
    if high == 0 or high > MAX_PARSED_GAIN_DB:
        return None
    category = _category_from_range(norm, direction, (low + high) / 2)
    correction = (low, high) if direction == "increase" else (-high, -low)
    return Label(category, stem, correction)


def _normalise(text: str) -> str:
    text = text.lower()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)  # hyphens, en/em dashes, minus sign
    text = re.sub(r"[\u2018\u2019]", "'", text)
    text = re.sub(r"(?<=\d),(?=\d)", ".", text)  # decimal comma
    text = re.sub(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", lambda m: _NUMBER_WORDS[m.group(1)], text)
    return re.sub(r"\s+", " ", text).strip()


def _find_stem(norm: str) -> str | None | bool:
    """The one target stem named (references removed); None if none, False if several.

    A stem that only appears as a reference ("the problem is with the vocals") still counts
    when no other stem is named."""
    found = _stems_named(_REFERENCE_RE.sub(" ", norm)) or _stems_named(norm)
    if len(found) > 1:
        return False
    return found.pop() if found else None


def _stems_named(text: str) -> set[str]:
    return {stem for stem, pattern in _STEM_RE.items() if pattern.search(text)}


def _find_range(norm: str) -> tuple[tuple[float, float] | None, int]:
    """The first stated range (or single value) as sorted magnitudes, and the numbers' sign
    (+1 all explicitly positive, -1 all negative, 0 otherwise)."""
    match = _RANGE_RE.search(norm)
    if match:
        raw = [group for group in match.groups() if group is not None]
    else:
        match = _SINGLE_RE.search(norm)
        if not match:
            return None, 0
        raw = [match.group(1)] * 2
    values = [float(value) for value in raw]
    sign = 0
    if all(value.startswith("-") for value in raw):
        sign = -1
    elif all(value.startswith("+") for value in raw):
        sign = 1
    low, high = sorted(abs(value) for value in values)
    return (_as_number(low), _as_number(high)), sign


def _as_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _find_direction(norm: str, sign: int) -> str | None:
    """'increase', 'decrease', 'conflict' or None (no direction stated)."""
    for up_re, down_re in ((_UP_VERBS, _DOWN_VERBS), (_TOO_QUIET, _TOO_LOUD)):
        up, down = bool(up_re.search(norm)), bool(down_re.search(norm))
        if up and down:
            return "conflict"
        if up or down:
            verdict = "increase" if up else "decrease"
            if up_re is _UP_VERBS:  # verbs decide, but a contradicting state word is a conflict
                state_up, state_down = bool(_TOO_QUIET.search(norm)), bool(_TOO_LOUD.search(norm))
                if (verdict == "increase" and state_down and not state_up) or (
                    verdict == "decrease" and state_up and not state_down
                ):
                    return "conflict"
            return verdict
    if sign:
        return "increase" if sign > 0 else "decrease"
    return None


def _severity(norm: str) -> str | None:
    """'severe', 'mild', or None when the words say neither or both."""
    severe, mild = bool(_SEVERE.search(norm)), bool(_MILD.search(norm))
    if severe == mild:
        return None
    return "severe" if severe else "mild"


def _categories(direction: str) -> tuple[str, str]:
    """(mild, severe) categories for a direction."""
    return ("quiet", "very_quiet") if direction == "increase" else ("loud", "very_loud")


def _category_from_range(norm: str, direction: str, midpoint_db: float) -> str:
    mild, severe = _categories(direction)
    boundary_db = abs(CORRECTION_DB[severe][0] if direction == "increase" else CORRECTION_DB[severe][1])
    if midpoint_db != boundary_db:
        return severe if midpoint_db > boundary_db else mild
    return severe if _severity(norm) == "severe" else mild


def _category_from_words(norm: str, direction: str) -> str | None:
    mild, severe = _categories(direction)
    words = _severity(norm)
    if words is None and _SEVERE.search(norm):
        return None  # both mild and severe words: unclear
    return severe if words == "severe" else mild


# --------------------------------------------------------------------------------------------
# DPO rejected answers

_OPPOSITE = {"quiet": "loud", "loud": "quiet", "very_quiet": "very_loud", "very_loud": "very_quiet"}
_OTHER_SEVERITY = {"quiet": "very_quiet", "very_quiet": "quiet", "loud": "very_loud", "very_loud": "loud"}


def make_rejected(label: Label, rng) -> tuple[Label, str]:
    """A plausible wrong answer for DPO and its kind.

    For a flaw, one of four kinds, each with probability 1/4: ``wrong_stem`` (same category,
    another target stem), ``wrong_direction`` (same stem, same severity, opposite direction:
    quiet <-> loud, very_quiet <-> very_loud), ``wrong_severity`` (same stem and direction, other
    severity: quiet <-> very_quiet, loud <-> very_loud) or ``missed_flaw`` (no_error). For
    ``no_error``, always ``false_alarm``: a flaw of a uniformly drawn category on a uniformly
    drawn target stem. Rejected labels use their category's canonical correction range.
    ``rng`` is a ``numpy.random.Generator``.
    """
    if label.category == "no_error":
        flaws = [category for category in CATEGORIES if category != "no_error"]
        category = flaws[int(rng.integers(len(flaws)))]
        stem = TARGET_STEMS[int(rng.integers(len(TARGET_STEMS)))]
        return Label.for_flaw(category, stem), "false_alarm"
    kind = REJECTION_KINDS[int(rng.integers(4))]
    if kind == "wrong_stem":
        others = [stem for stem in TARGET_STEMS if stem != label.stem]
        return Label.for_flaw(label.category, others[int(rng.integers(len(others)))]), kind
    if kind == "wrong_direction":
        return Label.for_flaw(_OPPOSITE[label.category], label.stem), kind
    if kind == "wrong_severity":
        return Label.for_flaw(_OTHER_SEVERITY[label.category], label.stem), kind
    return Label("no_error"), kind

