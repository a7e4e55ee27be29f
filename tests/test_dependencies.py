"""Declared minimum versions: one source of truth, enforced on import with one clear sentence.

The minimums themselves are verified by ``tools/check_min_deps.py`` (not part of this suite);
see docs/dependencies.md.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from ovdense.utils import versions

ROOT = Path(__file__).resolve().parents[1]


def _fake_versions(monkeypatch: pytest.MonkeyPatch, found: dict[str, str | None]) -> None:
    monkeypatch.delenv(versions.SKIP_ENV, raising=False)
    monkeypatch.setattr(versions, "_installed_version", lambda name: found.get(name))


@pytest.mark.parametrize("name", versions.CHECKED_AT_IMPORT)
def test_too_old_version_is_one_sentence_naming_the_fix(monkeypatch, name):
    found = dict.fromkeys(versions.CHECKED_AT_IMPORT, "999.0")
    found[name] = "0.9.16"
    _fake_versions(monkeypatch, found)
    minimum = versions.MINIMUM_VERSIONS[name]
    with pytest.raises(ImportError) as err:
        versions.check_dependency_versions()
    assert str(err.value) == (
        f"ovdense needs {name}>={minimum} (found 0.9.16): pip install -U '{name}>={minimum}'"
    )


def test_open_clip_2_32_is_refused(monkeypatch):
    # 2.24-2.32 fail later with a misleading "checkpoint does not match this architecture".
    _fake_versions(monkeypatch, {"open_clip_torch": "2.32.0", "timm": "999.0"})
    with pytest.raises(ImportError, match=r"open_clip_torch>=.*\(found 2\.32\.0\)"):
        versions.check_dependency_versions()


@pytest.mark.parametrize(
    "found", ["{min}", "{min}.1", "{min}+cu121", "{min}.post1", "999.0", "999.0.0rc1"]
)
def test_new_enough_versions_pass(monkeypatch, found):
    _fake_versions(
        monkeypatch,
        {n: found.format(min=versions.MINIMUM_VERSIONS[n]) for n in versions.CHECKED_AT_IMPORT},
    )
    versions.check_dependency_versions()


def test_missing_metadata_unparsable_version_and_opt_out_pass(monkeypatch):
    _fake_versions(monkeypatch, {"open_clip_torch": None, "timm": "unknown"})
    versions.check_dependency_versions()
    _fake_versions(monkeypatch, {"open_clip_torch": "1.0", "timm": "0.1"})
    monkeypatch.setenv(versions.SKIP_ENV, "1")
    versions.check_dependency_versions()


def test_version_comparison():
    r = versions._release
    assert r("3.0") == r("3.0.0") < r("3.0.1") < r("3.1") < r("10.0")
    assert r("2.32.0") < r("3.0.0") and r("1.0.30") < r("1.0.31") == r("1.0.31.post1")
    assert r("2.4.0+cu121") == r("2.4") and r("3.0.0rc1") == r("3.0.0") and r("x") == ()


def test_installed_environment_passes():
    versions.check_dependency_versions()


def test_setup_py_declares_exactly_the_checked_minimums(monkeypatch):
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    declared = {}
    for req in captured["install_requires"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)>=([0-9][0-9.]*)", req)
        assert match, f"install_requires entry {req!r} is not 'name>=version'"
        declared[match.group(1)] = match.group(2)
    assert declared == versions.MINIMUM_VERSIONS
    assert set(versions.CHECKED_AT_IMPORT) <= set(declared)


def test_docs_table_lists_every_minimum():
    text = (ROOT / "docs" / "dependencies.md").read_text(encoding="utf-8")
    for name, minimum in versions.MINIMUM_VERSIONS.items():
        row = rf"^\| `?{re.escape(name)}`? \| `?{re.escape(minimum)}`? \|"
        assert re.search(row, text, re.M), f"docs/dependencies.md: no row '| {name} | {minimum} |'"


def test_import_ovdense_runs_the_check():
    """A too-old open_clip (faked through importlib.metadata) stops ``import ovdense`` itself."""
    code = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda n: '2.24.0' if n == 'open_clip_torch' else real(n)\n"
        "try:\n"
        "    import ovdense\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    print('imported')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != versions.SKIP_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    minimum = versions.MINIMUM_VERSIONS["open_clip_torch"]
    assert out == (
        f"ovdense needs open_clip_torch>={minimum} (found 2.24.0): "
        f"pip install -U 'open_clip_torch>={minimum}'"
    )
