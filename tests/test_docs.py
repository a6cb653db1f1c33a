"""The README's configuration table is the users' reference: it must list every setting with the
default the code uses."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

from stacks.config import REPO_ROOT, PipelineConfig, _camel


def _readme_rows() -> dict[str, str]:
    text = (REPO_ROOT / "README.md").read_text()
    return {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", text, re.M)}


def test_every_setting_is_documented_with_its_default():
    rows = _readme_rows()
    for field in fields(PipelineConfig):
        key = _camel(field.name)
        assert key in rows, f"README configuration table lacks {key}"
        documented = rows[key].strip().strip("`")
        if field.default is MISSING:
            assert documented == "required", key
        elif field.default is None:
            assert documented == "unset", key
        elif isinstance(field.default, bool):
            assert documented == str(field.default).lower(), key
        else:
            assert documented == str(field.default), key


def test_readme_first_screen_gives_the_two_commands():
    first_screen = (REPO_ROOT / "README.md").read_text().splitlines()[:15]
    commands = [line.split("#")[0].strip() for line in first_screen if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
