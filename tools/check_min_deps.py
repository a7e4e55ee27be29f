"""Run the test suite against the declared minimum versions of ovdense's dependencies.

The minimums live in ``ovdense/utils/versions.py`` (``MINIMUM_VERSIONS``; ``setup.py`` reads
them). This script:

1. creates a throwaway virtual environment *outside* the repository with
   ``--system-site-packages`` (it sees the current environment's packages, torch included, and
   the editable ovdense install);
2. installs every declared minimum into it with ``pip install --no-deps name==minimum`` so the
   old versions shadow the current ones only inside that venv (plus the companions an old
   version pins, e.g. omegaconf 2.3's ``antlr4-python3-runtime==4.9.*``). torch and torchvision
   are *not* installed: their minimums are derived from the APIs the code uses, not run (a torch
   download is several GB); the venv uses the current ones;
3. prints the versions the venv really imports, then runs ``python -m pytest`` in it from the
   repository root and exits with pytest's status.

Usage (about 10 minutes on 2 CPU cores)::

    python tools/check_min_deps.py                        # whole suite (default markers)
    python tools/check_min_deps.py --venv /tmp/md -- -x tests/modeling   # pytest args after --
    python tools/check_min_deps.py --only open_clip_torch timm   # shadow only these
    python tools/check_min_deps.py --override timm==1.0.30       # try another version

Not part of the default test suite (it lives in ``tools/``, pytest collects ``tests/``).
A failure may also come from work in progress: compare with the same test under the normal
environment (``python -m pytest TEST``) before blaming a version.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Not installed into the venv (see the module docstring).
NOT_INSTALLED = ("torch", "torchvision")

#: Extra pins an old minimum needs that ``--no-deps`` would otherwise miss:
#: ``name -> [requirement, ...]`` (omegaconf < 2.4 is generated with ANTLR 4.9 and fails to
#: parse interpolations with a newer ``antlr4-python3-runtime``).
COMPANIONS: dict[str, list[str]] = {
    "omegaconf": ["antlr4-python3-runtime==4.9.3"],
}


def minimum_versions() -> dict[str, str]:
    ns: dict = {}
    exec((ROOT / "ovdense" / "utils" / "versions.py").read_text(), ns)
    return dict(ns["MINIMUM_VERSIONS"])


def _run(cmd: list[str], **kwargs) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--venv", default="/tmp/ovdense-mindeps", help="venv folder (outside the repo)"
    )
    parser.add_argument("--only", nargs="+", metavar="DIST", help="shadow only these packages")
    parser.add_argument(
        "--override", nargs="+", default=[], metavar="DIST==VERSION", help="other versions to try"
    )
    parser.add_argument("--no-tests", action="store_true", help="set up the venv only")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)

    venv_dir = Path(args.venv).expanduser().resolve()
    if venv_dir == ROOT or ROOT in venv_dir.parents:
        parser.error(f"--venv must be outside the repository, got {venv_dir}")

    wanted = minimum_versions()
    for item in args.override:
        name, _, version = item.partition("==")
        if name not in wanted or not version:
            parser.error(f"--override takes DIST==VERSION for one of {sorted(wanted)}: {item}")
        wanted[name] = version
    names = [n for n in (args.only or wanted) if n not in NOT_INSTALLED]
    unknown = sorted(set(names) - set(wanted))
    if unknown:
        parser.error(f"unknown dependencies {unknown}; known: {sorted(wanted)}")

    python = venv_dir / "bin" / "python"
    if not python.is_file():
        print(f"creating {venv_dir} (--system-site-packages)", flush=True)
        venv.EnvBuilder(system_site_packages=True, with_pip=True).create(venv_dir)
    reqs = [f"{n}=={wanted[n]}" for n in names]
    reqs += [c for n in names for c in COMPANIONS.get(n, [])]
    # Wheels only where they exist (no long compiles); a pure-Python sdist is fine.
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--prefer-binary", "-q"]
    if _run(pip + reqs) != 0:
        print("pip could not install the minimums (see above)", file=sys.stderr)
        return 2

    show = (
        "import importlib.metadata as m, sys\n"
        f"for n in {sorted(set(names) | set(NOT_INSTALLED))!r}:\n"
        "    print(f'  {n:24s} {m.version(n)}')\n"
        "import ovdense; print('  ovdense from', ovdense.__file__)\n"
    )
    print("versions inside the venv:", flush=True)
    if _run([str(python), "-c", show], cwd=ROOT) != 0:
        return 2
    if args.no_tests:
        return 0
    return _run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
        cwd=ROOT,
    )


if __name__ == "__main__":
    sys.exit(main())
