"""The README's configuration table is the operators' manual: every setting is in it."""

from __future__ import annotations

import re
from pathlib import Path

from userstore.worker.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def documented_variables() -> set[str]:
    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    section = section.split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)`", section, flags=re.MULTILINE))


def environment_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"USERSTORE_{name.upper()}")
        else:
            # AWS_REGION / AWS_DEFAULT_REGION: the first choice is the one in the table.
            first = alias if isinstance(alias, str) else alias.choices[0]
            names.add(str(first))
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = documented_variables()
    assert len(documented) > 20  # the table was found
    assert environment_variables() - documented == set()


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    assert documented_variables() - environment_variables() == set()
