"""requirements.lock is what the README installs, what pyproject allows, and what this suite runs on."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"


def _lock() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"requirements.lock: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in reqs]


def test_lock_pins_every_declared_dependency_within_its_range():
    pins = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is in pyproject.toml but not in requirements.lock: run scripts/lock.sh"
        )
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}: run scripts/lock.sh"
        )


def test_suite_runs_on_exactly_the_locked_versions():
    drift = []
    for name, want in _lock().items():
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name} missing")
            continue
        if have.public != want.public:  # torch's local label (+cpu) names the build, not the version
            drift.append(f"{name} {have} != {want}")
    assert not drift, f"environment differs from requirements.lock: {drift}"


def test_both_readme_commands_install_from_the_lock():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2
    assert all("pip install" in c and "-r requirements.lock" in c for c in commands)
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1].strip() in ci, ".ci/run must run README command 2 exactly"
    assert "scripts/readme_job.sh" in ci, ".ci/run must run README command 1 (scripts/readme_job.sh)"
    job = (REPO / "scripts" / "readme_job.sh").read_text()
    assert "## Two commands" in job and "Denver Broncos" in job and "do not contain the answer" in job
    assert commands[0].startswith("python3 -m venv .venv") and "rag index corpus/" in commands[0]
