"""Reference evaluators and the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa.errors import UserError
from moa.eval.datasets import Item
from moa.eval.reference import extract_final_answer, parse_numbers
from moa.eval.registry import make_evaluator
from moa.eval.types import NO_TARGET, Evaluator
from tests.probe import run_python


def _item(target: str | None) -> Item:
    return Item(id="1", input="q", target=target)


async def test_exact_normalises() -> None:
    """Case, spaces, quotes and a trailing period do not matter."""
    ev = make_evaluator("exact")
    assert (await ev.score(_item("Paris"), '  "paris." ')).value == 1.0
    assert (await ev.score(_item("Paris"), "Lyon")).value == 0.0


async def test_exact_final_answer_extraction() -> None:
    """With extract_final, only the final answer is compared."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    assert (await ev.score(_item("42"), "Thinking...\nThe final answer is 42.")).value == 1.0
    assert (await ev.score(_item("7"), r"so \boxed{7}")).value == 1.0


async def test_exact_final_answer_prefers_hashes_to_boxed() -> None:
    """A `#### N` line is the final answer even when a `\\boxed{}` comes before it."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    assert (await ev.score(_item("24"), "\\boxed{12} doubled\n#### 24")).value == 1.0


async def test_contains() -> None:
    """The target inside the answer scores 1."""
    ev = make_evaluator("contains")
    assert (await ev.score(_item("blue whale"), "It is the Blue  Whale!")).value == 1.0


@pytest.mark.parametrize("target", ["", "   ", '""', "."])
@pytest.mark.parametrize("case_sensitive", [False, True])
async def test_contains_finds_no_blank_target_in_every_answer(target: str, case_sensitive: bool) -> None:
    """A target that is blank once normalised (an empty cell, `""`) names nothing to find: it was
    "in" every answer, so each scored 1."""
    ev = make_evaluator({"name": "contains", "case_sensitive": case_sensitive})
    score = await ev.score(_item(target), "anything at all")
    if case_sensitive and target.strip():
        assert score.value == 0.0  # `""` and `.` are text when case and quotes count
    else:
        assert (score.value, score.detail) == (0.0, NO_TARGET)


async def test_regex_from_config_and_target() -> None:
    """The pattern comes from the config, else from the target."""
    assert (await make_evaluator({"name": "regex", "pattern": r"\d+"}).score(_item(None), "a1")).value == 1.0
    assert (await make_evaluator("regex").score(_item(r"^ab+$"), "abbb")).value == 1.0


def test_invalid_regex_is_user_error() -> None:
    """A bad pattern raises UserError naming it."""
    with pytest.raises(UserError, match=r"invalid regex `\(`"):
        make_evaluator({"name": "regex", "pattern": "("})


@pytest.mark.parametrize(
    ("answer", "target", "value"),
    [
        ("so it costs $1,234.50 total", "1234.5", 1.0),
        ("first 3 then -7", "-7", 1.0),
        ("about 3/4 of it", "0.75", 1.0),
        ("it is 41", "42", 0.0),
        ("The answer is 18.", "18", 1.0),
    ],
)
async def test_numeric_last_number(answer: str, target: str, value: float) -> None:
    """Without a `####`, `\\boxed{}` or "answer is", the last number is compared with the target."""
    assert (await make_evaluator("numeric").score(_item(target), answer)).value == value


async def test_numeric_without_number_has_detail() -> None:
    """No number scores 0 and says so, naming the expected number."""
    score = await make_evaluator("numeric").score(_item("3"), "no idea")
    assert score.value == 0 and score.detail == "no number in the answer, expected 3"


async def test_numeric_relative_tolerance() -> None:
    """rel_tol accepts close answers."""
    ev = make_evaluator({"name": "numeric", "rel_tol": 0.01})
    assert (await ev.score(_item("1000"), "1005")).value == 1.0


def test_parse_numbers_ignores_hyphenated_ranges() -> None:
    """A hyphen between digits is not a minus sign."""
    assert parse_numbers("pages 10-12") == [10, 12]


@pytest.mark.parametrize("name", ["exact", "contains", "regex", "numeric"])
async def test_no_target_scores_zero(name: str) -> None:
    """Reference evaluators give 0 with a detail when the item has no target."""
    score = await make_evaluator(name).score(_item(None), "x")
    assert (score.value, score.detail) == (0.0, NO_TARGET)


def test_unknown_evaluator_lists_known() -> None:
    """An unknown name raises UserError listing the known ones."""
    with pytest.raises(
        UserError, match="unknown evaluator `bleu`; known: choice, contains, exact, execution"
    ):
        make_evaluator("bleu")


def test_extra_config_field_rejected() -> None:
    """Unknown config fields raise UserError naming the field."""
    with pytest.raises(UserError, match="`tolerance`"):
        make_evaluator({"name": "numeric", "tolerance": 1})


@pytest.mark.parametrize("field", ["abs_tol", "rel_tol"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_unbounded_tolerance_is_refused_by_name(field: str, value: float) -> None:
    """An infinite tolerance made every score raise OverflowError (Fraction(inf)), after every
    setup was paid to answer; it is refused when the evaluator is made, naming the field."""
    with pytest.raises(UserError, match=f"`{field}`"):
        make_evaluator({"name": "numeric", field: value})


@pytest.mark.parametrize("field", ["timeout_s", "compile_timeout_s", "html_timeout_s"])
def test_an_infinite_sandbox_time_limit_is_refused_by_name(field: str) -> None:
    """An infinite time limit would let one answer that sleeps hold the experiment forever."""
    with pytest.raises(UserError, match=f"`{field}`"):
        make_evaluator({"name": "execution", field: float("inf")})


def test_evaluators_satisfy_protocol() -> None:
    """Every registered evaluator implements the Evaluator protocol."""
    for name in ("exact", "contains", "regex", "numeric", "execution"):
        assert isinstance(make_evaluator(name), Evaluator)


# (answer, target) pairs `exact` with extract_final must score 1: the final answer in chat markup
FINAL_RIGHT = [
    ("The final answer is: Paris", "Paris"),
    ("The answer is: Paris", "Paris"),
    ("**Final Answer:** Paris", "Paris"),
    ("*Final Answer:* Paris", "Paris"),
    ("**Final answer is**: Paris", "Paris"),
    ("The answer is **Paris**.", "Paris"),
    ("The answer is *Paris*", "Paris"),
    ("Answer: `Paris`", "Paris"),
    ("**Answer:**\n\n**Paris**", "Paris"),
    ("The answer is\nParis", "Paris"),
    (r"\boxed{\text{Paris}}", "Paris"),
    (r"The answer is \(\text{Paris}\).", "Paris"),
    (r"So the result is \boxed{\frac{1}{2}}.", "1/2"),
    ("The answer is $42$.", "42"),
    ("The answer is (B).", "B"),
    ("The answer is **B**.", "B"),
    ("The answer is B.", "(B)"),
    ("#### Step 1: Recall capitals\nFrance's capital.\n\nThe answer is Paris.", "Paris"),
    ("##### Step 2\nParis", "Paris"),
    ("#### Final Answer: Paris", "Paris"),
    ("#### Final Answer\nParis", "Paris"),
    ("Let me answer: first, think.\nFinal answer: Paris", "Paris"),
    ("The answer is __init__", "__init__"),
]

# (answer, target) pairs it must score 0: a wrong final answer, or the right word outside it
FINAL_WRONG = [
    ("#### Paris\nParis was the capital once, but the answer is Lyon.", "Paris"),
    ("#### Step 1: Paris\nThe answer is Lyon.", "Paris"),
    ("The answer is **Lyon**. Not Paris.", "Paris"),
    (r"\boxed{\text{Lyon}} (not Paris)", "Paris"),
    ("**Final Answer:** Lyon\n\nParis is wrong.", "Paris"),
    ("Final answer: Lyon. My answer is Paris", "Paris"),
    ("The answer is (C).", "B"),
]


async def test_exact_final_answer_in_chat_markup() -> None:
    """`exact` with extract_final reads the final answer through emphasis, `$`, `\\text{}` and headings."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    wrong = []
    for table, want in ((FINAL_RIGHT, 1.0), (FINAL_WRONG, 0.0)):
        for answer, target in table:
            if (await ev.score(_item(target), answer)).value != want:
                wrong.append((answer, target, extract_final_answer(answer)))
    assert wrong == []


# MATH answers written differently from their target, as MATH's graders (hendrycks' `is_equiv`,
# lm-eval's minerva_math) count them right
MATH_RIGHT = [
    (r"So $\frac{a}{b} = \boxed{-\dfrac{2}{3}}$.", r"-\frac{2}{3}"),
    (r"\boxed{(3,\frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\left[ 2, 5 \right)}", "[2,5)"),
    (r"\boxed{x = 5}", "5"),
    (r"\boxed{30^\circ}", "30"),
    (r"\boxed{30^{\circ}}", r"30^\circ"),
    (r"\boxed{25\%}", "25"),
    (r"\boxed{\$18.90}", "18.90"),
    (r"\boxed{2\sqrt3}", r"2\sqrt{3}"),
    (r"\boxed{10 \text{ inches}}", "10"),
    (r"\boxed{12\text{ cm}^2}", "12"),
    (r"\boxed{1,\!234}", "1234"),
    (r"\boxed{.5}", "0.5"),
    (r"\boxed{(2, 5)}", "(2,5)"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\dfrac{\sqrt{3}}{2}"),
]

MATH_WRONG = [
    (r"\boxed{-\frac{2}{3}}", r"\frac{2}{3}"),
    (r"\boxed{(2, 5)}", "[2,5]"),
    (r"\boxed{\sqrt{3}}", "3"),
    (r"\boxed{2\sqrt{3}}", r"3\sqrt{2}"),
    (r"\boxed{x = 6}", "5"),
    (r"\boxed{10 \text{ inches}}", "1"),
    (r"\boxed{1,234}", "1,235"),
]


async def test_exact_final_answer_compares_math_answers_as_math_graders_do() -> None:
    """`\\left(`, `\\dfrac`, degrees, `\\%`, `\\$`, a unit, `x =`, `\\sqrt3`, `.5` and spacing do not
    make a right MATH answer wrong, and a different answer stays wrong."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    wrong = []
    for table, want in ((MATH_RIGHT, 1.0), (MATH_WRONG, 0.0)):
        for answer, target in table:
            if (await ev.score(_item(target), answer)).value != want:
                wrong.append((answer, target, extract_final_answer(answer)))
    assert wrong == []


@pytest.mark.parametrize(
    ("answer", "target", "value"),
    [
        (r"Final Answer: The final answer is $\frac{5}{6}$. I hope it is correct.", r"\frac{5}{6}", 1.0),
        (r"The answer is $5$, since $2 + 3 = 5$.", "5", 1.0),
        (r"So the final answer is \(x = 7\). Done.", "7", 1.0),
        (r"Final Answer: The final answer is $6$. I hope it is correct.", "5", 0.0),
    ],
)
async def test_a_math_span_after_the_marker_is_the_final_answer(
    answer: str, target: str, value: float
) -> None:
    """Minerva's answer line (lm-eval's minerva_math) and "the answer is $5$, since ...": the `$...$`
    after the marker is the answer, not the sentence it opens (both scored 0 when right)."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    assert (await ev.score(_item(target), answer)).value == value


@pytest.mark.parametrize(
    "answer", [r"Adding up.\n#### Final Answer: $\boxed{5}$", r"Adding up.\n#### $\boxed{5}$"]
)
async def test_a_box_on_the_last_hash_line_is_unwrapped(answer: str) -> None:
    """A `####` last line holding a box: the box's contents are the answer (`\\boxed{5}` was compared
    with the target as it was, and a right answer scored 0)."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    assert (await ev.score(_item("5"), answer)).value == 1.0
    assert (await ev.score(_item("6"), answer)).value == 0.0


@pytest.mark.parametrize(
    ("answer", "target", "value"),
    [
        (r"\boxed{\begin{pmatrix}-1\\2\end{pmatrix}}", r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", 1.0),
        (r"\boxed{\begin{pmatrix} 2 \\ -1 \end{pmatrix}}", r"\begin{pmatrix}-1\\2\end{pmatrix}", 0.0),
    ],
)
async def test_a_matrix_row_break_is_not_latex_spacing(answer: str, target: str, value: float) -> None:
    """MATH-500's vectors (`\\begin{pmatrix} -1 \\\\ 2 \\end{pmatrix}`): the `\\ ` of a row break was
    taken as the control space `\\ ` and dropped with the break's second backslash, so the same
    vector written without spaces scored 0."""
    ev = make_evaluator({"name": "exact", "extract_final": True})
    assert (await ev.score(_item(target), answer)).value == value


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"name": "numeric", "abs_tol": True}, "abs_tol"),
        ({"name": "execution", "cpu_s": True}, "cpu_s"),
        (
            {"name": "judge", "topology": "judge.yaml", "execution": {"timeout_s": False}},
            "execution.timeout_s",
        ),
    ],
)
def test_a_boolean_where_a_number_is_meant_is_refused(config: dict[str, object], field: str) -> None:
    """Lax pydantic read `abs_tol: true` as a tolerance of 1: 2 scored right against a target of 3."""
    name = config["name"]
    with pytest.raises(UserError) as info:
        make_evaluator(config)
    assert str(info.value) == f"evaluator `{name}`: field `{field}`: expected a number, not a boolean"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            {"name": "contains", "case_sensitiv": True},
            "field `case_sensitiv`: unknown field; did you mean `case_sensitive`?",
        ),
        (
            {"name": "numeric", "abs_tl": 0.1},
            "field `abs_tl`: unknown field; did you mean `abs_tol`?",
        ),
        ({"name": "judge"}, "field `topology`: required field is missing"),
    ],
)
def test_a_misspelt_or_missing_evaluator_option_is_said_as_a_topology_s_is(
    config: dict[str, object], said: str
) -> None:
    """pydantic's "Extra inputs are not permitted" named no way out; a topology file's misspelt
    field gets the closest one, and an evaluator's option now does too."""
    with pytest.raises(UserError) as info:
        make_evaluator(config)
    assert str(info.value) == f"evaluator `{config['name']}`: {said}"


def test_a_number_yaml_reads_as_text_is_still_a_number() -> None:
    """PyYAML reads `abs_tol: 1e-3` as the string '1e-3': refusing booleans leaves it accepted."""
    ev = make_evaluator({"name": "numeric", "abs_tol": "1e-3"})
    assert ev.config.abs_tol == 0.001  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("target", "answer", "score"),
    [
        ("\\frac{1}{2}", "The answer is $\\boxed{0.5}$.", 1.0),
        ("33", "\\boxed{033}", 1.0),
        ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", 1.0),
        ("5", "\\boxed{6}", 0.0),
        ("(1,2)", "\\boxed{1}", 0.0),
        ("2\\sqrt{3}", "\\boxed{3.4641016151377544}", 0.0),  # an expression is no number
    ],
)
async def test_exact_with_numbers_compares_equal_values(target: str, answer: str, score: float) -> None:
    """`numbers: true`: final answers that each read as one number agree by value; without it,
    `0.5` against `\\frac{1}{2}` scored 0."""
    ev = make_evaluator({"name": "exact", "extract_final": True, "numbers": True})
    assert (await ev.score(_item(target), answer)).value == score


async def test_exact_without_numbers_compares_the_written_forms() -> None:
    plain = make_evaluator({"name": "exact", "extract_final": True})
    assert (await plain.score(_item("\\frac{1}{2}"), "\\boxed{0.5}")).value == 0.0


#: replies of one wrapping character, each layer once peeled off with a copy of the rest (minutes
#: for these); a hang guard of 60 s for what takes a second or two
PEELED = {"quotes": "`" * 1_500_000, "dollars": "$" * 1_500_000}


def test_replies_of_nested_quotes_or_dollars_are_read_at_once(tmp_path: Path) -> None:
    """`contains` (quotes peeled by `normalize`) and `exact` with `extract_final` (`$` peeled off the
    final answer) read an answer wrapped in 1,500,000 layers in linear time."""
    for name, reply in PEELED.items():
        (tmp_path / f"{name}.txt").write_text(reply + "x" + reply)
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from moa.eval.datasets import Item\n"
        "from moa.eval.registry import make_evaluator\n"
        "here, item = Path(sys.argv[1]), Item(id='1', input='q', target='x')\n"
        "for config in ('contains', {'name': 'exact', 'extract_final': True}):\n"
        "    for name in ('quotes', 'dollars'):\n"
        "        reply = (here / f'{name}.txt').read_text()\n"
        "        print(asyncio.run(make_evaluator(config).score(item, reply)).value)\n"
    )
    assert run_python(str(probe), str(tmp_path)).split() == ["1.0"] * 4
