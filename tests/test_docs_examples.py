"""The examples of docs/rules.md's sections on regular expressions, statistics, countries and
assignment run: each section's YAML blocks are a rules file and a test suite, and
``rulekit test`` passes them (the suites hold the expectations)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from scaffold import REPO

from rulekit.cli.main import cli

RULES_MD = REPO / "docs" / "rules.md"


def section(title: str) -> str:
    text = RULES_MD.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def yaml_blocks(text: str) -> list[str]:
    return [part.split("```", 1)[0] for part in text.split("```yaml\n")[1:]]


def run_section(title: str, tmp_path: Path, config: str | None = None) -> str:
    """Write the section's rules and suites into one folder, run ``rulekit test`` on it."""
    blocks = yaml_blocks(section(title))
    if blocks[0].startswith("# rulekit.yaml"):  # the section's config comes first
        config, *blocks = blocks
    kinds = [("suite" if isinstance(yaml.safe_load(b), dict) else "rules") for b in blocks]
    assert "rules" in kinds and "suite" in kinds, f"{title}: a rules block and a suite block"
    folder = tmp_path / "rules.d"
    folder.mkdir()
    for index, (block, kind) in enumerate(zip(blocks, kinds, strict=True)):
        (folder / f"{index:02}-{kind}.yaml").write_text(block, encoding="utf-8")
    arguments = ["test", "--rules", str(folder)]
    if config is not None:
        (tmp_path / "rulekit.yaml").write_text(config, encoding="utf-8")
        arguments += ["--config", str(tmp_path / "rulekit.yaml")]
    result = CliRunner().invoke(cli, [*arguments, str(folder)])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output
    return result.output


@pytest.mark.parametrize(
    "title", ["Regular expressions", "Countries", "Assignment that knows the team"]
)
def test_the_sections_examples_pass_their_suites(title: str, tmp_path: Path) -> None:
    run_section(title, tmp_path)
