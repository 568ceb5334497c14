"""JUnit artifact templates for the load test: a realistic size mix and hostile files.

Reports are generated (deterministic for a seed) in three dialects — pytest, Maven
Surefire and Jest — at 50, 500 and 5,000 test cases, zipped once and shared by every run
that names them (the emulator's artifact templates).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from flakeguard.emulator import zip_members

SIZES: tuple[int, ...] = (50, 500, 5_000)
SIZE_WEIGHTS: tuple[float, ...] = (0.70, 0.25, 0.05)
"""Most CI runs are small; a few monorepo runs carry thousands of results."""
DIALECTS: tuple[str, ...] = ("pytest", "surefire", "jest")
POISON_KINDS: tuple[str, ...] = ("zip_bomb", "xxe", "billion_laughs", "truncated", "not_junit")


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    zip_bytes: bytes
    cases: int
    poisoned: bool = False


def _case(dialect: str, index: int, rng: random.Random) -> str:
    duration = f"{rng.uniform(0.001, 2.0):.3f}"
    failed = rng.random() < 0.02
    skipped = not failed and rng.random() < 0.03
    if dialect == "pytest":
        attrs = (
            f'classname="tests.test_mod{index // 20}" name="test_case_{index}" '
            f'file="tests/test_mod{index // 20}.py" line="{index}" time="{duration}"'
        )
    elif dialect == "surefire":
        attrs = f'name="case{index}" classname="com.acme.Mod{index // 20}Test" time="{duration}"'
    else:
        attrs = (
            f'classname="Mod{index // 20} renders case {index}" '
            f'name="Mod{index // 20} renders case {index}" time="{duration}"'
        )
    if failed:
        message = quoteattr(f"AssertionError: expected {index} got {index + 1}")
        body = f'<failure message={message} type="AssertionError">trace line {index}</failure>'
        return f"<testcase {attrs}>{body}</testcase>"
    if skipped:
        return f'<testcase {attrs}><skipped message="not on this platform"/></testcase>'
    return f"<testcase {attrs}/>"


def junit_report(dialect: str, cases: int, seed: int) -> bytes:
    """One JUnit XML document of `cases` test cases in the given dialect."""
    rng = random.Random(f"{seed}:{dialect}:{cases}")
    body = "".join(_case(dialect, i, rng) for i in range(cases))
    suite = f'<testsuite name="{dialect}-suite" tests="{cases}" timestamp="2026-01-01T00:00:00">'
    if dialect == "jest":
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><testsuites name="jest tests" '
            f'tests="{cases}">{suite}{body}</testsuite></testsuites>'
        ).encode()
    return f'<?xml version="1.0" encoding="UTF-8"?>{suite}{body}</testsuite>'.encode()


def generated_templates(seed: int) -> list[Template]:
    """Every (dialect, size) template, zipped."""
    return [
        Template(
            f"{dialect}-{size}",
            zip_members({f"junit-{dialect}.xml": junit_report(dialect, size, seed)}),
            size,
        )
        for size in SIZES
        for dialect in DIALECTS
    ]


def _zip_bomb() -> bytes:
    # 20 MB of one byte deflates ~1000:1, far past the reader's compression-ratio budget.
    zeros = b"<" + b"a" * (20 * 1024 * 1024)
    return zip_members({"junit.xml": zeros})


_XXE = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<testsuite name="x"><testcase name="&x;" classname="c"/></testsuite>'
)
_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lollollollollollollollollollol">'
    + b"".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'.encode() for i in range(9)
    )
    + b']><testsuite name="l"><testcase name="&j;" classname="c"/></testsuite>'
)


def poisoned_templates() -> list[Template]:
    """Hostile artifacts: each must fail its job with a reason, never crash a worker."""
    truncated = junit_report("pytest", 50, 0)[:-400]
    documents = {
        "xxe": _XXE,
        "billion_laughs": _LAUGHS,
        "truncated": truncated,
        "not_junit": b'<?xml version="1.0"?><project><target name="build"/></project>',
    }
    templates = [Template("poison-zip_bomb", _zip_bomb(), 0, poisoned=True)]
    templates += [
        Template(f"poison-{kind}", zip_members({"junit.xml": doc}), 0, poisoned=True)
        for kind, doc in documents.items()
    ]
    return templates


def pick_size(rng: random.Random, weights: Sequence[float] = SIZE_WEIGHTS) -> int:
    return rng.choices(SIZES, weights=weights)[0]
