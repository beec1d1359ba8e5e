import math

import pytest

from phasejax.phases import (
    LABEL_SETS,
    Phase,
    UnknownPhaseWord,
    label_set,
    phase_from_word,
)


def test_paper4_is_the_papers_label_set_and_default_order():
    ls = label_set("paper4")
    assert ls.codes == ("EAP", "LAP", "PVP", "DP")
    assert ls.step1_classes == ("AP", "PVP", "DP")
    assert ls.step2_classes == ("EAP", "LAP")


def test_full5_adds_nc_to_step1():
    ls = label_set("full5")
    assert ls.codes == ("NC", "EAP", "LAP", "PVP", "DP")
    assert ls.step1_classes == ("NC", "AP", "PVP", "DP")
    assert ls.two_step_paths() == ((0, -1), (1, 0), (1, 1), (2, -1), (3, -1))


@pytest.mark.parametrize("name", sorted(LABEL_SETS))
def test_two_step_paths_give_a_distribution(name):
    # p(phase) = p1[s1] * p2[s2]; with any p1, p2 the phase probabilities must sum to 1.
    ls = label_set(name)
    p1 = [0.1 * (i + 1) for i in range(len(ls.step1_classes))]
    total1 = sum(p1)
    p1 = [p / total1 for p in p1]
    p2 = [0.3, 0.7]
    probs = [p1[s1] * (p2[s2] if s2 >= 0 else 1.0) for s1, s2 in ls.two_step_paths()]
    assert math.isclose(sum(probs), 1.0)
    assert math.isclose(probs[ls.index("EAP")], p1[ls.step1_index("EAP")] * 0.3)


@pytest.mark.parametrize(
    ("word", "phase"),
    [
        ("arterial", Phase.LAP),
        ("Early Arterial", Phase.EAP),
        ("late-arterial", Phase.LAP),
        ("venous", Phase.PVP),
        ("portal", Phase.PVP),
        ("Portal Venous Phase", Phase.PVP),
        ("nephrographic", Phase.PVP),
        ("delayed", Phase.DP),
        ("equilibrium", Phase.DP),
        ("EQP", Phase.DP),
        ("excretory", Phase.DP),
        ("native", Phase.NC),
        ("pre", Phase.NC),
        ("unenhanced", Phase.NC),
        ("non-contrast", Phase.NC),
        ("pvp", Phase.PVP),
        ("EAP", Phase.EAP),
    ],
)
def test_vocabulary_maps_to_codes(word, phase):
    assert phase_from_word(word) is phase


@pytest.mark.parametrize("word", ["AP", "late", "arterial-ish", "", "CT ABDOMEN"])
def test_unknown_or_ambiguous_words_raise(word):
    with pytest.raises(UnknownPhaseWord):
        phase_from_word(word)


def test_label_not_in_set_is_an_error():
    with pytest.raises(ValueError, match="not in label set"):
        label_set("paper4").index("NC")
    with pytest.raises(ValueError, match="unknown label set"):
        label_set("paper3")
