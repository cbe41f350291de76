"""docs/configuration.md is made from the settings classes (`python -m ghost.config_doc`): the
committed file must be what the generator makes today, and it must name every setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ghost.config import Settings, TraceSettings
from ghost.config_doc import reference, sections

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "make docs  (or: python -m ghost.config_doc > docs/configuration.md)"


def test_the_committed_reference_is_the_generated_one() -> None:
    made = reference()
    committed = DOC.read_text()
    assert committed == made, f"docs/configuration.md is out of date with src/ghost/config.py: run\n    {REGENERATE}"


def test_the_module_prints_the_reference() -> None:
    printed = subprocess.run([sys.executable, "-m", "ghost.config_doc"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    assert printed == reference()


def test_every_setting_is_in_exactly_one_section() -> None:
    listed = [name for _, names in sections() for name in names]
    assert sorted(listed) == sorted(Settings.model_fields)


def test_every_setting_has_its_row() -> None:
    rows = {line.split("`")[1]: line for line in reference().splitlines() if line.startswith("| `")}
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description: the reference is made from it"
        assert f"`--{name.replace('_', '-')}`" in rows[name] and f"`GHOST_{name.upper()}`" in rows[name]


def test_the_tracing_variables_are_documented() -> None:
    text = reference()
    for name, field in TraceSettings.model_fields.items():
        assert field.description, name
    assert "| `OTEL_EXPORTER_OTLP_ENDPOINT` |" in text and "| `GHOST_TRACE_CONTENT_MAX_CHARS` |" in text


def test_a_changed_description_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The probe: a description edited in the class and not regenerated makes the comparison fail.
    monkeypatch.setattr(Settings.model_fields["port"], "description", "Some other words.")
    with pytest.raises(AssertionError, match="make docs"):
        test_the_committed_reference_is_the_generated_one()
