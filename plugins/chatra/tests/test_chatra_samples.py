"""The sample bodies in ``data/`` are all documented and all used."""

from __future__ import annotations

from pathlib import Path

from chatra_samples import DATA

SAMPLES = sorted(p.name for p in DATA.iterdir() if p.name != "README.md")


def test_every_sample_is_described_in_the_readme():
    readme = (DATA / "README.md").read_text()
    assert SAMPLES
    assert [name for name in SAMPLES if f"`{name}`" not in readme] == []


def test_every_sample_is_used_by_a_test():
    here = Path(__file__)
    sources = "".join(p.read_text() for p in here.parent.glob("test_*.py") if p != here)
    assert [name for name in SAMPLES if f'"{name}"' not in sources] == []
