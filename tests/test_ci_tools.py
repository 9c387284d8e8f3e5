"""CI runs every real component: with ``MOA_REQUIRE_TOOLCHAINS=1`` (set by ``.ci/run``) a missing
sandbox, browser or compiler fails here, so the tests that need it cannot skip unnoticed."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from moa.eval.isolation import isolation_available
from moa.eval.languages.toolchains import find_toolchain

pytestmark = pytest.mark.skipif(
    not os.environ.get("MOA_REQUIRE_TOOLCHAINS"), reason="only where MOA_REQUIRE_TOOLCHAINS=1 (CI)"
)


def test_bubblewrap_builds_its_sandbox() -> None:
    ok, why = isolation_available()
    assert ok, why


@pytest.mark.parametrize("language", ["c", "cpp", "go", "java", "javascript", "rust", "typescript"])
def test_each_languages_toolchain_is_there(language: str) -> None:
    found = find_toolchain(language)
    assert not isinstance(found, str), found


def test_chromium_and_playwright_for_html_answers_and_the_viewer() -> None:
    assert shutil.which("chromium") == "/usr/bin/chromium"
    assert importlib.util.find_spec("playwright") is not None
