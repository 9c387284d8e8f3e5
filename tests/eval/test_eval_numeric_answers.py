"""Numeric answers scored as careful GSM8K harnesses score them: `####`, then `\\boxed{}`, then
"the answer is", then the last number; against GSM8K-shaped fixtures written for these tests."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import gzip
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from moa.eval.datasets import Item, load_dataset
from moa.eval.numeric import FinalNumber, NotANumber, final_answer, final_number, parse_numbers
from moa.eval.registry import make_evaluator
from moa.testing.sim import SimModel, SimRequest, SimServer, last_user_text
from tests.probe import run_python

FIXTURES = Path(__file__).parent / "fixtures"
PROBLEMS = FIXTURES / "gsm8k_style.jsonl"
RESPONSES = FIXTURES / "gsm8k_responses.jsonl"
REPO = Path(__file__).resolve().parents[2]
TRAILER = "\nI am 95% sure."


def _items() -> dict[str, Item]:
    return {i.id: i for i in load_dataset(PROBLEMS)}


def _responses() -> list[dict[str, object]]:
    return [json.loads(line) for line in RESPONSES.read_text().splitlines()]


def test_fixture_loads_as_gsm8k_with_targets_after_hashes() -> None:
    """The 24 fixture rows load as GSM8K; each target is the number after `####`, commas dropped."""
    items = _items()
    assert len(items) == 24
    assert [items[k].target for k in ("g03", "g04", "g09", "g23")] == ["1234", "-5", "2.25", "125000"]
    assert all(
        i.meta["solution"].endswith(f"#### {i.meta['solution'].split('#### ')[-1]}") for i in items.values()
    )


async def test_every_gold_solution_with_a_confidence_trailer_scores_correct() -> None:
    """Each gold solution, calculator annotations and `I am 95% sure.` included, scores 1."""
    ev = make_evaluator("numeric")
    for item in _items().values():
        score = await ev.score(item, item.meta["solution"] + TRAILER)
        assert score.value == 1.0, (item.id, score.detail)


@pytest.mark.parametrize(
    "row", _responses(), ids=lambda r: f"{r['id']}-{'right' if r['correct'] else 'wrong'}"
)
async def test_fixture_responses_score_as_labelled(row: dict[str, object]) -> None:
    """Every fixture response (boxed, `The answer is $1,234.`, units, wrong answers) scores as labelled."""
    item = _items()[str(row["id"])]
    score = await make_evaluator("numeric").score(item, str(row["response"]))
    assert score.value == (1.0 if row["correct"] else 0.0), score.detail


@pytest.mark.parametrize(
    ("text", "value", "rule"),
    [
        ("Then 10 + 8 = 18.\n#### 18\nI am 95% sure.", 18, "after ####"),
        (r"\boxed{18} because 18 of 95 is fine; the answer is 7", 18, "in \\boxed{}"),
        ("The answer is 18. Answer: 19. Looks 95% right.", 19, "after 'Answer:'"),
        ("the ANSWER is $1,234. I am 95% sure", 1234, "after 'ANSWER is'"),
        ("It went from 3 km to 12 km", 12, "last number"),
        ("It costs $3.50.", 3.5, "last number"),
        ("first 2 then <<4*5=20>>", 2, "last number"),
    ],
)
def test_rules_in_order(text: str, value: float, rule: str) -> None:
    """`####` beats `\\boxed{}`, which beats "the answer is" (last one), which beats the last number."""
    found = final_number(text)
    assert found is not None and (found.value, found.rule) == (value, rule)


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("The answer is 3.50", "3.5"),
        ("#### 1,234", "1234"),
        ("a loss of -$12.", "-12"),
        ("about 40% of them", "40"),
        ("5 apples", "5"),
        (r"\boxed{\dfrac{3}{4}}", "0.75"),
    ],
)
async def test_number_forms_compare_by_value(answer: str, target: str) -> None:
    """Separators, `$`, `%`, units, signs, decimals and boxed fractions compare by value."""
    item = Item(id="1", input="q", target=target)
    assert (await make_evaluator("numeric").score(item, answer)).value == 1.0


async def test_failure_detail_names_extracted_and_expected() -> None:
    """A wrong answer's detail says what was extracted, by which rule, and what was expected."""
    item = Item(id="1", input="q", target="18")
    score = await make_evaluator("numeric").score(item, "So 20 in all." + TRAILER)
    assert (score.value, score.detail) == (0.0, "got 95 (last number), expected 18")
    score = await make_evaluator("numeric").score(item, "no idea")
    assert score.detail == "no number in the answer, expected 18"


def test_compare_scores_a_gzipped_gsm8k_dataset(tmp_path: Path) -> None:
    """`moa compare` on a `.jsonl.gz` GSM8K file: gold-with-trailer answers score 1, off-by-one 0."""
    items = _items()
    by_question = {i.input: i for i in items.values()}

    def gold(req: SimRequest) -> str:
        return str(by_question[last_user_text(req.messages).strip()].meta["solution"]) + TRAILER

    def off_by_one(req: SimRequest) -> str:
        target = by_question[last_user_text(req.messages).strip()].target
        return f"The answer is {float(target or 0) + 1:g}. I am 95% sure."

    data = tmp_path / "gsm8k.jsonl.gz"
    data.write_bytes(gzip.compress(PROBLEMS.read_bytes()))
    with SimServer({"gold-m": SimModel(answer=gold), "off-m": SimModel(answer=off_by_one)}) as srv:
        agent = f"api_base: {json.dumps(srv.base_url)}, retry: {{max_attempts: 1}}"
        for name, model in (("gold", "gold-m"), ("wrong", "off-m")):
            (tmp_path / f"{name}.yaml").write_text(
                f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: openai/{model}, {agent}}}\n"
            )
        exp = tmp_path / "exp.yaml"
        exp.write_text(
            "name: gsm8k-gz\ndataset: gsm8k.jsonl.gz\nevaluator: numeric\n"
            "baseline: gold.yaml\nsetups: [wrong.yaml]\nconcurrency: 4\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "moa", "compare", str(exp), "--out", str(out), "--no-progress"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert len(results) == 48 and all(r["error"] is None for r in results)
    quality = {s["name"]: s["quality"] for s in json.loads((out / "summary.json").read_text())["setups"]}
    assert quality == {"gold": 1.0, "wrong": 0.0}


# (answer, target): layouts chat models answer GSM8K in, each scoring 1
RIGHT_SHAPES = [
    ("#### Step 1: Eggs left\n16 - 3 - 4 = 9\n\n#### Step 2: Money\n9 * 2 = 18.\n\nThe answer is 18.", "18"),
    ("##### Step 2\nThe answer is 18", "18"),
    ("#### 1. Eggs left\n16 - 3 - 4 = 9\n#### 2. Money\n9 * 2 = $18", "18"),
    ("### Solution\n9 eggs at $2.\n#### Final Answer\nJanet makes $18 every day.", "18"),
    ("She makes $18.\n#### $18", "18"),
    ("#### **18**", "18"),
    (
        "**Answer:**\nJanet's ducks lay 16 eggs. She uses 3 + 4 = 7, leaving 9.\nShe sells them at $2: $18.",
        "18",
    ),
    ("**Answer:**\n1. She keeps 3 + 4 = 7 of 16 eggs.\n2. She sells 9 for $18.", "18"),
    ("Answer:\n- 16 eggs laid\n- 9 sold at $2, so $18", "18"),
    ("**Answer:** 18", "18"),
    ("**Final Answer**: $18", "18"),
    ("The final answer is: $18.", "18"),
    ("The answer is\n\n$$18$$", "18"),
    ("Answer:\n**18**", "18"),
    ("The final answer is \\(18\\).", "18"),
    ("The answer is **$18**.", "18"),
    ("The answer is 9 * 2 = 18.", "18"),
    ("The answer is 9 x $2 = $18 per day.", "18"),
    ("The answer is 18. Note that the answer is not 20.", "18"),
    ("So the answer is 18. I am 95% sure.", "18"),
    ("**Final Answer:**\n\n$$\\boxed{18}$$", "18"),
    (r"The total is $\boxed{1{,}234}$.", "1234"),
    (r"$\boxed{1\,234}$", "1234"),
    ("The answer is 1\u202f234 people.", "1234"),
    (r"$\boxed{3\frac{1}{2}}$", "3.5"),
    (r"She needs $3\tfrac12$ cups.", "3.5"),
    (r"\boxed{\text{3.5 cups}}", "3.5"),
    (r"\boxed{\$18}", "18"),
    (r"\boxed{-\frac{3}{4}}", "-0.75"),
    ("The answer is -3/4", "-0.75"),
    ("The answer is 2^10 = 1024", "1024"),
    ("The answer is 1e6.", "1000000"),
    ("Answer: 2.5e-3", "0.0025"),
    ("He has 2 eggs left", "2"),
    ("1" + "0" * 400, "1" + "0" * 400),
]

# (answer, target): a wrong number that must not be read as the answer, each scoring 0
WRONG_SHAPES = [
    ("#### Step 18: Total\nThe answer is 20.", "18"),
    ("#### 18. Check the total\n9 * 2 = 20, so the answer is 20.", "18"),
    ("#### 2 Money\nThe answer is 20.\n#### 20", "2"),
    ("**Answer:**\nShe has 18 eggs and sells 9 of them at $4: $36.", "18"),
    ("Answer:\n1. She lays 16 eggs.\n2. She sells 9 for $18.", "1"),
    ("The answer is 20, not 18.", "18"),
    ("Answer: 16 eggs, of which 9 are sold for $18", "18"),
    ("The answer is 1/2 = 0.5", "1"),
    (r"\boxed{1{,}234}", "234"),
    (r"\boxed{3\frac{1}{2}}", "15.5"),
    ("The answer is 12345678901234567", "12345678901234568"),
    ("The answer is " + "1" + "0" * 400, "18"),
    ("The answer is " + "9" * 5000, "18"),
]


async def test_chat_layouts_score_as_right_or_wrong() -> None:
    """Headings, `Answer:` headers, LaTeX separators, mixed numbers, calculations: each scores as labelled."""
    ev = make_evaluator("numeric")
    wrong = []
    for shapes, want in ((RIGHT_SHAPES, 1.0), (WRONG_SHAPES, 0.0)):
        for answer, target in shapes:
            score = await ev.score(Item(id="1", input="q", target=target), answer)
            if score.value != want:
                wrong.append((answer[:60], target[:20], score.detail))
    assert wrong == []


def test_huge_and_over_long_numbers_read_without_raising() -> None:
    """A number past a float's range is exact; one past 600 digits reads as inf and matches nothing."""
    big = final_number("The answer is " + "1" + "0" * 400)
    assert big is not None and big.exact == 10**400 and big.value == float("inf")
    huge = final_number("-" + "9" * 5000)
    assert huge is not None and (huge.value, huge.exact) == (float("-inf"), None)
    assert parse_numbers("1" + "0" * 400 + " and 2") == [float("inf"), 2]


@pytest.mark.parametrize(
    ("answer", "target"),
    [("The answer is 1e1000", "1"), ("1e999999", "1"), ("#### 3e99999999999", "3"), ("1e999998", "1e999999")],
)
async def test_an_exponent_past_three_digits_is_not_dropped(answer: str, target: str) -> None:
    """`1e1000` was read as 1 (the exponent was read to three digits only, then dropped), so an
    absurd answer scored right against 1; it is past 600 digits, which equals nothing."""
    for evaluator in ("numeric", {"name": "exact", "extract_final": True, "numbers": True}):
        score = await make_evaluator(evaluator).score(Item(id="1", input="q", target=target), answer)
        assert score.value == 0.0, (evaluator, score.detail)
    found = final_number(answer)
    assert found is not None and (found.value, found.exact) == (float("inf"), None)


def test_a_tiny_or_zero_number_with_a_huge_exponent_reads_without_raising() -> None:
    """An exponent of thousands of digits is never converted (`int()` raises past 4,300 digits), a
    number under 10^-600 is 0 (inside any tolerance) and zero stays zero however large its exponent."""
    assert parse_numbers("1e-" + "9" * 5000 + " 0e999999 2e-700") == [0, 0, 0]
    assert parse_numbers("1e" + "9" * 5000) == [float("inf")]


@pytest.mark.parametrize("base", ["9" * 5000, "0" * 5000 + "9", "0." + "9" * 5000, "9" * 5000 + ".5"])
async def test_a_power_of_a_base_of_thousands_of_digits_is_scored_without_raising(base: str) -> None:
    """`9...9^{2}` with a 5,000-digit base raised ValueError (Python's 4,300-digit `int()` limit)
    in the scorer, for `numeric` and `exact` with `numbers`, every time the answer was scored."""
    item = Item(id="1", input="q", target="5")
    for evaluator in ("numeric", {"name": "exact", "extract_final": True, "numbers": True}):
        for answer in (base + "^{2}", rf"\boxed{{{base}^2}}", f"The answer is {base} \\times 10^5"):
            assert (await make_evaluator(evaluator).score(item, answer)).value == 0.0


@pytest.mark.parametrize(
    ("answer", "target", "right"), [("－５", "5", False), ("The answer is －５", "-5", True)]
)
async def test_a_fullwidth_minus_is_a_sign(answer: str, target: str, right: bool) -> None:
    """CJK text's fullwidth minus (`－５`) is a sign as `-` and `−` are: it was dropped, so a wrong
    -5 scored right against 5 and a right one wrong against -5."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), answer)
    assert score.value == (1.0 if right else 0.0), score.detail


@pytest.mark.parametrize(
    ("answer", "target", "right"),
    [("The answer is ٣٫٥.", "3.5", True), ("The answer is ٣٫٥.", "3", False), ("#### ١٬٢٣٤", "1234", True)],
)
async def test_arabic_decimal_and_thousands_separators_are_read(
    answer: str, target: str, right: bool
) -> None:
    """Arabic-Indic digits with the Arabic decimal (U+066B) and thousands (U+066C) separators read as
    one number: `٣٫٥` was 3 and 5, so it scored right against 3 and wrong against 3.5."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), answer)
    assert score.value == (1.0 if right else 0.0), score.detail


async def test_over_long_number_detail_is_shortened() -> None:
    """A failure detail shows a 401-digit number by its ends and length, not all of it."""
    item = Item(id="1", input="q", target="18")
    score = await make_evaluator("numeric").score(item, "1" + "0" * 400)
    assert score.detail == "got 100000000000...000000 (401 characters) (last number), expected 18"


def test_without_fractions_a_slash_separates_two_signed_numbers() -> None:
    """fractions=False reads `-3/4` as -3 and 4 (the sign stays with -3), not as 3."""
    assert parse_numbers("-3/4", fractions=False) == [-3, 4]
    assert parse_numbers("-3/4") == [-0.75]
    found = final_number("The answer is -3/4", fractions=False)
    assert found is not None and found.value == -3


@pytest.mark.parametrize(
    "answer",
    ["#### 18", "Janet makes $18.\n#### 18\nI am 95% sure.", "#### $18", "#### 18 dollars", "x\n#### 18."],
)
def test_gsm8k_answer_lines_win_over_later_headings(answer: str) -> None:
    """GSM8K's own `#### N` line is the answer even when a heading with a number comes after it."""
    found = final_number(answer + "\n\n#### Check 2: 9 * 2 = 18 again\nThe answer is 7.")
    assert found is not None and (found.value, found.rule) == (18, "after ####")


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        (r"The area is \boxed{12 \text{ cm}^2}.", "12"),
        (r"Volume: \boxed{36\text{ m}^{3}}", "36"),
        (r"\boxed{12\ \mathrm{m}^2}", "12"),
        (r"\boxed{30^\circ}", "30"),
        (r"The angle is $30^{\circ}$, so the answer is 30^\circ.", "30"),
        (r"\boxed{2^{10}}", "1024"),
        ("The answer is 2^10.", "1024"),
        (r"\boxed{3 \times 10^5}", "300000"),
        (r"\boxed{1.5 \cdot 10^{-3}}", "0.0015"),
        (r"\boxed{2^{-3}}", "0.125"),
        (r"The answer is $9 \times 2 = 18$.", "18"),
        (r"\boxed{1,\!234}", "1234"),
        (r"\boxed{x = 18}", "18"),
        (r"\boxed{\frac{\sqrt{3}}{2} \approx 0.866}", "0.866"),
    ],
)
async def test_final_answers_with_units_powers_and_degrees_score_right(answer: str, target: str) -> None:
    """A unit's power (`cm^2`) is not the answer, a power of a number is its value, `\\times` is part
    of the calculation and MATH's `1,\\!234` is 1234: each of these right answers scores 1."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), answer)
    assert score.value == 1.0, score.detail


@pytest.mark.parametrize(
    ("answer", "target", "shown"),
    [
        (r"\boxed{2\sqrt{3}}", "3", r"2\sqrt{3}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", "2", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{3\pi}", "3", r"3\pi"),
        (r"\boxed{x^2+1}", "1", "x^2+1"),
        (r"\boxed{(2, 5)}", "5", "(2, 5)"),
        (r"\boxed{x = 2, y = 3}", "3", "x = 2, y = 3"),
        (r"\boxed{a = 2 \text{ and } b = 3}", "3", "a = 2 and b = 3"),
        (r"\boxed{5 \text{ hours and } 30 \text{ minutes}}", "30", "5 hours and 30 minutes"),
        (r"The answer is \boxed{7}, or \boxed{\pm 3}", "3", r"\pm 3"),
        (r"The answer is 2\sqrt{3}.", "2", r"2\sqrt{3}"),
        (r"The answer is \(3\pi\).", "3", r"3\pi"),
    ],
)
async def test_final_answer_that_is_not_one_number_scores_zero(answer: str, target: str, shown: str) -> None:
    """An expression or a tuple is not the number its last digit spells: it scores 0, and the
    detail names it."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), answer)
    assert score.value == 0.0
    assert score.detail is not None and f"{shown!r}" in score.detail and "is not a number" in score.detail


@pytest.mark.parametrize("target", [r"2\sqrt{3}", "(2, 5)", "1 000", r"\frac{\sqrt{3}}{2}", "2:30"])
async def test_target_that_is_not_one_number_is_reported(target: str) -> None:
    """A target must be one number: `1 000` was read as 0 and `2\\sqrt{3}` as 3, so wrong answers
    matched them."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), "0 3 5 30")
    assert (score.value, score.detail) == (0.0, f"target {target!r} is not a number")


@pytest.mark.parametrize(
    "target",
    [
        "18",
        "$18.00",
        "18 dollars",
        "x = 18",
        "3 + 15 = 18",
        r"\boxed{18}",
        "so #### 18",
        r"\boxed{t = 1,234 - 1,216 = 18}",
        "16 - 3 - 4 = 9 eggs, and 9 * 2 = 18",
    ],
)
async def test_targets_written_as_one_number_still_read(target: str) -> None:
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), "#### 18")
    assert score.value == 1.0, score.detail


def test_huge_powers_read_without_computing_them() -> None:
    """`9^{9999}` is beyond 600 digits (it equals nothing) and is never computed."""
    found = final_number(r"\boxed{9^{9999}}")
    assert found is not None and (found.value, found.exact) == (float("inf"), None)
    assert final_number(r"\boxed{0.5^{-9999}}") is not None
    assert final_number(r"\boxed{2^{-9999}}") is None


#: hostile answers: a long run of blanks where the patterns once retried the whole run at each blank
#: (a minute for 300,000); how the time grows with the run is `benchmarks/linear.py`'s to measure
BLANKS = 300_000


@pytest.mark.parametrize(
    ("answer", "read"),
    [
        ("1" + " " * BLANKS + "^2", "1"),
        (r"\boxed{1" + " " * BLANKS + "cm^2 x}", "1"),
        ("The answer is 2" + " " * BLANKS + r"\pi", None),
    ],
    ids=["spaces-before-a-power", "spaces-in-a-box", "spaces-after-the-answer"],
)
def test_long_runs_of_blanks_are_read(answer: str, read: str | None) -> None:
    """A power, a unit or a symbol past 300,000 blanks does not join the number before them: a
    number followed by blanks alone is that number, the answer then `\\pi` is not one number."""
    found = final_answer(answer)
    if read is None:
        assert isinstance(found, NotANumber)
    else:
        assert isinstance(found, FinalNumber) and found.exact == Fraction(read)


@pytest.mark.parametrize(
    ("answer", "target", "right"),
    [
        ("The answer is 2 1/2 hours.", "2.5", True),
        ("The answer is -2 1/2", "-2.5", True),
        ("It takes 3 1/3 days.", "10/3", True),
        ("The answer is 2 1/2 hours.", "2", False),
        ("The answer is 2 3/2", "3.5", False),
    ],
)
async def test_plain_mixed_numbers_read_as_their_value(answer: str, target: str, right: bool) -> None:
    """`2 1/2` written in words' way (a whole number, a space, a proper fraction) is 2.5, as
    `2\\frac{1}{2}` is; `2 3/2` is not a mixed number."""
    score = await make_evaluator("numeric").score(Item(id="1", input="q", target=target), answer)
    assert score.value == (1.0 if right else 0.0), score.detail


def test_the_last_box_is_read_with_its_braces_balanced() -> None:
    """`last_boxed` gives the last box's contents (nested braces kept, an unclosed box running to the
    end), passing over blank boxes unless asked for them."""
    from moa.eval.numeric import last_boxed

    assert last_boxed(r"\boxed{\frac{1}{2}} then \boxed{ }") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{\frac{1}{2}} then \boxed{ }", blank=True) == " "
    assert last_boxed(r"\boxed{\boxed{5}} and \boxed{7") == "7"
    assert last_boxed(r"\boxed 5$ and \fbox{6}.") == "6"
    assert last_boxed("no box here") is None


#: a reply of unclosed boxes: each was once read to the end of the reply, keeping every suffix
#: (minutes and gigabytes for this one); a hang guard of 60 s for what takes milliseconds
UNCLOSED = "\\boxed{" * 28_000


def test_a_reply_of_unclosed_boxes_is_scored_at_once(tmp_path: Path) -> None:
    """28,000 unclosed `\\boxed{` in a reply or a MATH solution are read in linear time."""
    (tmp_path / "reply.txt").write_text(UNCLOSED)
    (tmp_path / "math.jsonl").write_text(json.dumps({"problem": "p", "solution": UNCLOSED + "5}"}) + "\n")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from moa.eval.datasets import Item, load_dataset\n"
        "from moa.eval.registry import make_evaluator\n"
        "here = Path(sys.argv[1])\n"
        "reply = (here / 'reply.txt').read_text()\n"
        "item = Item(id='1', input='q', target='5')\n"
        "for config in ('numeric', {'name': 'exact', 'extract_final': True, 'numbers': True}):\n"
        "    print(asyncio.run(make_evaluator(config).score(item, reply)).value)\n"
        "print(load_dataset(here / 'math.jsonl').items[0].target)\n"
    )
    assert run_python(str(probe), str(tmp_path)).split() == ["0.0", "0.0", "5"]
