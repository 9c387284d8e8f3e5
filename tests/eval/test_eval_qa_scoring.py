"""QA items scored against any of their accepted answers, and SQuAD's exact match and F1."""

from __future__ import annotations

import pytest

from moa.errors import UserError
from moa.eval.datasets import QA, Item
from moa.eval.reference import squad_f1, squad_normalize
from moa.eval.registry import make_evaluator
from moa.eval.types import NO_TARGET, Evaluator


def _qa(*answers: str) -> Item:
    return Item(id="1", input="q", target=answers[0], meta={"format": QA, "answers": list(answers)})


async def _score(config: str | dict[str, object], item: Item, reply: str) -> tuple[float, str | None]:
    ev = make_evaluator(config)
    assert isinstance(ev, Evaluator)
    score = await ev.score(item, reply)
    return score.value, score.detail


CHIPMUNKS = _qa("David Seville", "Ross Bagdasarian", "Ross Bagdasarian Sr.")


@pytest.mark.parametrize(
    ("config", "reply"),
    [
        ("exact", "Ross Bagdasarian"),
        ("exact", " ross bagdasarian sr. "),
        ("contains", "It was Ross Bagdasarian, under the name David Seville."),
        ("contains", "Ross Bagdasarian Sr. voiced them."),
        ({"name": "contains", "case_sensitive": True}, "It was  Ross Bagdasarian."),
        ({"name": "exact", "squad": True}, "the Ross Bagdasarian, Sr"),
        ({"name": "exact", "extract_final": True}, "They were created in 1958.\nAnswer: Ross Bagdasarian"),
    ],
)
async def test_a_reply_matching_any_accepted_answer_scores_1(
    config: str | dict[str, object], reply: str
) -> None:
    """Not only the first: every accepted answer counts (they scored 0 against the first alone)."""
    assert await _score(config, CHIPMUNKS, reply) == (1.0, None)


async def test_the_detail_names_every_accepted_answer() -> None:
    assert await _score("exact", CHIPMUNKS, "Alvin") == (
        0.0,
        "expected one of 'David Seville', 'Ross Bagdasarian', 'Ross Bagdasarian Sr.'",
    )
    assert await _score("contains", CHIPMUNKS, "Alvin") == (
        0.0,
        "none of 'David Seville', 'Ross Bagdasarian', 'Ross Bagdasarian Sr.' found",
    )
    many = _qa(*(f"a{i}" for i in range(8)))
    assert (await _score("exact", many, "b"))[1] == "expected one of 'a0', 'a1', 'a2', 'a3', 'a4' and 3 more"


async def test_an_item_of_another_layout_is_scored_against_its_target_only() -> None:
    """A generic row's extra `answers` field is not a list of accepted answers: only `target` counts."""
    item = Item(id="1", input="q", target="Paris", meta={"answers": ["Lyon"]})
    assert await _score("exact", item, "Lyon") == (0.0, "expected 'Paris'")
    assert await _score("contains", item, "Lyon") == (0.0, "'Paris' not found")


# (text, SQuAD v1.1's normalize_answer of it), worked by hand from the official script: lower
# case, then ASCII punctuation removed, then the articles, then whitespace collapsed
NORMALIZED = [
    ("The  Denver Broncos!", "denver broncos"),
    ("an apple, the pie", "apple pie"),
    ("A.B. Smith", "ab smith"),  # punctuation goes first: `A.` is no article once it is `ab`
    ("Theater", "theater"),  # `the` inside a word stays
    ("rock 'n' roll", "rock n roll"),
    ("“Paris”", "“paris”"),  # string.punctuation is ASCII: curly quotes stay
    ("The", ""),
]


@pytest.mark.parametrize(("text", "normalized"), NORMALIZED)
def test_squad_normalisation_is_the_official_scripts(text: str, normalized: str) -> None:
    assert squad_normalize(text) == normalized


@pytest.mark.parametrize(
    ("reply", "truth", "exact", "squad"),
    [
        ("the Denver Broncos.", "Denver Broncos", 0.0, 1.0),
        ("A.B. Smith", "AB Smith", 0.0, 1.0),
        ("“Paris”", "Paris", 1.0, 0.0),  # moa strips curly quotes; SQuAD's script keeps them
        ("Broncos", "Denver Broncos", 0.0, 0.0),
    ],
)
async def test_exact_with_squad_normalises_as_squad_does(
    reply: str, truth: str, exact: float, squad: float
) -> None:
    """`{name: exact, squad: true}` is SQuAD's exact match, not moa's own normalisation."""
    assert (await _score("exact", _qa(truth), reply))[0] == exact
    assert (await _score({"name": "exact", "squad": True}, _qa(truth), reply))[0] == squad


async def test_squad_with_extract_final_compares_the_final_answer() -> None:
    ev = {"name": "exact", "squad": True, "extract_final": True}
    assert (
        await _score(ev, _qa("Denver Broncos"), "Thinking about it.\nFinal answer: the **Denver Broncos**.")
    )[0] == 1.0
    assert (await _score(ev, _qa("Denver Broncos"), "Final answer: Carolina Panthers"))[0] == 0.0


# (prediction, ground truth, SQuAD v1.1's f1_score), worked by hand: tokens of the normalised texts,
# common = the multiset intersection, P = common/len(prediction), R = common/len(truth), 2PR/(P+R)
F1_BY_HAND = [
    ("the Denver Broncos won", "Denver Broncos", 0.8),  # P 2/3, R 1
    ("Broncos", "Denver Broncos", 2 / 3),  # P 1, R 1/2
    ("broncos broncos broncos", "Denver Broncos", 0.4),  # common 1 (min of 3 and 1): P 1/3, R 1/2
    ("Levi's Stadium in Santa Clara", "Santa Clara, California", 0.5),  # P 2/5, R 2/3
    ("Levi's Stadium in Santa Clara", "Levi's Stadium", 4 / 7),  # P 2/5, R 1
    ("The", "Denver", 0.0),  # no token left
    ("the", "an", 0.0),  # both empty: 0 in v1.1 (SQuAD 2.0's script says 1)
    ("Denver Broncos", "the denver broncos", 1.0),
]


@pytest.mark.parametrize(("prediction", "truth", "value"), F1_BY_HAND)
def test_squad_f1_is_the_official_scripts(prediction: str, truth: str, value: float) -> None:
    assert squad_f1(prediction, truth) == pytest.approx(value, abs=1e-12)


async def test_f1_is_the_best_over_the_accepted_answers() -> None:
    """SQuAD's metric_max_over_ground_truths: 4/7 against "Levi's Stadium", not 1/2 against the first."""
    item = _qa("Santa Clara, California", "Levi's Stadium")
    value, detail = await _score("f1", item, "Levi's Stadium in Santa Clara")
    assert value == pytest.approx(4 / 7) and detail == 'F1 0.571, best against "Levi\'s Stadium"'
    assert await _score("f1", item, "Levi's Stadium") == (1.0, None)
    assert await _score("f1", item, "Paris") == (
        0.0,
        "no word in common with one of 'Santa Clara, California', \"Levi's Stadium\"",
    )


async def test_f1_with_extract_final_scores_the_final_answer() -> None:
    item = _qa("Denver Broncos")
    reply = "The Broncos beat the Panthers.\nFinal answer: Denver Broncos"
    assert (await _score("f1", item, reply))[0] < 0.5
    assert await _score({"name": "f1", "extract_final": True}, item, reply) == (1.0, None)


async def test_f1_scores_a_plain_item_against_its_target() -> None:
    item = Item(id="1", input="q", target="Denver Broncos")
    assert (await _score("f1", item, "Broncos"))[0] == pytest.approx(2 / 3)
    assert await _score("f1", Item(id="1", input="q"), "x") == (0.0, NO_TARGET)


def test_f1_refuses_an_unknown_option_by_name() -> None:
    with pytest.raises(UserError, match=r"evaluator `f1`: field `squad`: unknown field"):
        make_evaluator({"name": "f1", "squad": True})


@pytest.mark.parametrize(
    ("config", "item", "reply"),
    [
        ("numeric", _qa("four", "4"), "There are 4 of them."),
        ("numeric", _qa("1945", "1944"), "The answer is 1944."),
        ({"name": "regex", "full_match": True, "ignore_case": True}, CHIPMUNKS, "ross bagdasarian"),
        ("regex", _qa("Paris", "Par[íi]s"), "It is París."),
    ],
)
async def test_numeric_and_regex_accept_any_accepted_answer(
    config: str | dict[str, object], item: Item, reply: str
) -> None:
    """`numeric` and `regex` score 1 when the reply matches an accepted answer other than the first."""
    assert await _score(config, item, reply) == (1.0, None)


async def test_numeric_names_the_accepted_numbers_when_none_matches() -> None:
    """A QA item none of whose numbers the reply gives scores 0, the detail naming each number."""
    value, detail = await _score("numeric", _qa("1945", "nineteen forty-four", "1944"), "It was 1950.")
    assert value == 0.0
    assert detail is not None and "expected one of 1945, 1944" in detail


async def test_numeric_over_a_qa_item_with_no_number_names_its_answers() -> None:
    """A QA item none of whose accepted answers is a number scores 0, saying so."""
    assert await _score("numeric", _qa("four", "IV"), "4") == (
        0.0,
        "no accepted answer is a number: 'four', 'IV'",
    )


async def test_regex_of_a_qa_item_with_a_bad_accepted_answer_names_the_item() -> None:
    """Every accepted answer is compiled as a pattern: one that does not compile names the item."""
    ev = make_evaluator("regex")
    assert isinstance(ev, Evaluator)
    with pytest.raises(UserError, match=r"item `1` target: invalid regex `C\+\+\(`"):
        await ev.score(_qa("C", "C++("), "C")
