"""Contrast phases, label sets, head layouts and the vocabulary of other datasets.

The paper (Liu et al., Insights into Imaging 2025) labels every series EAP, LAP,
PVP or DP. Real archives also hold non-contrast series, so a 5-class set with NC
is available as configuration; the paper's 4 classes stay the default.

Two-step layout (paper's strategy B): network 1 tells AP (= EAP or LAP) from PVP
and DP (and NC when enabled); network 2 splits AP into EAP and LAP. The final
per-phase probability is the product along the path, e.g.
p(EAP) = p1(AP) * p2(EAP | AP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    NC = "NC"
    EAP = "EAP"
    LAP = "LAP"
    PVP = "PVP"
    DP = "DP"


PHASE_NAMES: dict[Phase, str] = {
    Phase.NC: "non-contrast",
    Phase.EAP: "early arterial",
    Phase.LAP: "late arterial",
    Phase.PVP: "portal venous",
    Phase.DP: "delayed",
}

ARTERIAL = (Phase.EAP, Phase.LAP)
AP = "AP"  # step-1 class that groups EAP and LAP


@dataclass(frozen=True, kw_only=True)
class LabelSet:
    """An ordered label set with its one-step and two-step head layouts."""

    name: str
    phases: tuple[Phase, ...]

    @property
    def num_classes(self) -> int:
        return len(self.phases)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(p.value for p in self.phases)

    def index(self, phase: Phase | str) -> int:
        phase = Phase(phase)
        if phase not in self.phases:
            raise ValueError(f"phase {phase.value} is not in label set {self.name!r} {self.codes}")
        return self.phases.index(phase)

    # Two-step layout -------------------------------------------------------
    @property
    def step1_classes(self) -> tuple[str, ...]:
        """Network 1's classes: AP in place of EAP and LAP, the other phases as they are."""
        out: list[str] = []
        for p in self.phases:
            if p in ARTERIAL:
                if AP not in out:
                    out.append(AP)
            else:
                out.append(p.value)
        return tuple(out)

    @property
    def step2_classes(self) -> tuple[str, ...]:
        return tuple(p.value for p in ARTERIAL)

    def step1_index(self, phase: Phase | str) -> int:
        phase = Phase(phase)
        return self.step1_classes.index(AP if phase in ARTERIAL else phase.value)

    def step2_index(self, phase: Phase | str) -> int:
        """Index in network 2's classes, or -1 for a non-arterial phase (masked out of its loss)."""
        phase = Phase(phase)
        return ARTERIAL.index(phase) if phase in ARTERIAL else -1

    def two_step_paths(self) -> tuple[tuple[int, int], ...]:
        """For each phase in order: (step-1 class index, step-2 class index or -1).

        p(phase) = p1[step1] * (p2[step2] if step2 >= 0 else 1).
        """
        return tuple((self.step1_index(p), self.step2_index(p)) for p in self.phases)


LABEL_SETS: dict[str, LabelSet] = {
    "paper4": LabelSet(name="paper4", phases=(Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP)),
    "full5": LabelSet(name="full5", phases=(Phase.NC, Phase.EAP, Phase.LAP, Phase.PVP, Phase.DP)),
}
DEFAULT_LABEL_SET = "paper4"


def label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}") from None


class UnknownPhaseWord(ValueError):
    """A phase word that phasejax does not map; we refuse to guess."""


# Vocabulary of other datasets and of radiology reports. Keys are normalised
# (lower case, separators collapsed to single spaces). "arterial" without
# early/late maps to LAP: a standard single arterial acquisition at ~35 s is late
# arterial (the timing used for hepatic lesion detection), which is also how
# VinDr-Multiphase and BOA-Contrast treat their single arterial class. Ambiguous
# words are deliberately absent: "AP" in series descriptions usually means
# abdomen/pelvis coverage, bare "late" may be late arterial or delayed.
_VOCAB: dict[str, Phase] = {}


def _add(phase: Phase, *words: str) -> None:
    for w in words:
        _VOCAB[_normalise(w)] = phase


def _normalise(word: str) -> str:
    return re.sub(r"[\s_\-/.]+", " ", word.strip().lower()).strip()


_add(
    Phase.NC,
    "nc", "non contrast", "noncontrast", "non enhanced", "nonenhanced", "unenhanced",
    "native", "pre", "pre contrast", "precontrast", "plain", "plain scan", "without contrast",
    "baseline",
)  # fmt: skip
_add(
    Phase.EAP,
    "eap", "early arterial", "early arterial phase", "arterial early", "early art",
    "angio", "angiographic", "cta", "ct angiography",
)  # fmt: skip
_add(
    Phase.LAP,
    "lap", "late arterial", "late arterial phase", "arterial late", "late art",
    "arterial", "arterial phase", "art", "hepatic arterial", "pancreatic", "pancreatic phase",
)  # fmt: skip
_add(
    Phase.PVP,
    "pvp", "pv", "portal", "portal venous", "portal venous phase", "portovenous", "venous",
    "venous phase", "portal phase", "hepatic venous", "nephrographic", "nephrographic phase",
    "ven",
)  # fmt: skip
_add(
    Phase.DP,
    "dp", "delayed", "delayed phase", "delay", "late phase", "equilibrium",
    "equilibrium phase", "eqp", "excretory", "excretory phase", "urographic",
    "pyelographic", "washout", "transitional", "interstitial",
)  # fmt: skip


def phase_from_word(word: str) -> Phase:
    """Map a phase word from another dataset's vocabulary to a Phase.

    Raises UnknownPhaseWord for anything not in the table: a wrong label is worse
    than a missing one.
    """
    key = _normalise(word)
    if key.upper() in Phase.__members__:
        return Phase(key.upper())
    try:
        return _VOCAB[key]
    except KeyError:
        raise UnknownPhaseWord(
            f"unknown phase word {word!r}; use one of {sorted(set(_VOCAB))} "
            f"or a code {[p.value for p in Phase]}"
        ) from None
