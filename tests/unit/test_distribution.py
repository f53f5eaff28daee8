"""vesper is installed as the distribution `vesper-hivemind` (`vesper` on the package
index is an unrelated project): that distribution provides the import package `vesper`
and the `vesper` command."""

from __future__ import annotations

from importlib.metadata import distribution
from pathlib import Path

from click.testing import CliRunner

import vesper
from vesper.entrypoints.cli import main

DISTRIBUTION = "vesper-hivemind"


def _package_dirs() -> set[Path]:
    """The directories named `vesper` that the distribution installs: listed in its
    RECORD (a wheel), or under a path its .pth file adds (an editable install)."""
    dist = distribution(DISTRIBUTION)
    found: set[Path] = set()
    for file in dist.files or []:
        if file.parts[0] == "vesper":
            found.add(Path(dist.locate_file("vesper")).resolve())
        elif file.suffix == ".pth":
            for line in Path(dist.locate_file(file)).read_text().splitlines():
                if line and not line.startswith(("#", "import")):
                    found.add((Path(line) / "vesper").resolve())
    return found


def test_the_distribution_provides_the_vesper_package() -> None:
    assert Path(vesper.__file__).resolve().parent in _package_dirs()


def test_the_distribution_provides_the_vesper_command() -> None:
    scripts = {
        ep.name: ep.value
        for ep in distribution(DISTRIBUTION).entry_points
        if ep.group == "console_scripts"
    }
    assert scripts == {"vesper": "vesper.entrypoints.cli:main"}


def test_version_names_the_distribution_version() -> None:
    result = CliRunner().invoke(main, ["--version"], prog_name="vesper")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"vesper, version {distribution(DISTRIBUTION).version}"
