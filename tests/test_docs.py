"""The README is the users' reference: its configuration table is the one the settings declaration
generates, and its first screen gives the two commands."""

from __future__ import annotations

from customlabels_batch.settings import readme_table
from stacks.functions import REPO_ROOT

README = REPO_ROOT / "README.md"


def test_configuration_table_is_generated_from_the_declaration():
    text = README.read_text()
    table = readme_table()
    assert table in text, "README's configuration table is stale: run `make readme`"
    assert text.count("| `projectArn` |") == 1


def test_readme_first_screen_gives_the_two_commands():
    first_screen = README.read_text().splitlines()[:15]
    commands = [line.split("#")[0].strip() for line in first_screen if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
