"""Saga definitions in YAML: read with line numbers, checked, built into a `Saga`.

A definition file (sagakit's own format, or Ruvon's ``workflow.yaml``) is
read keeping each node's line, validated against a JSON schema, its
function paths resolved, and built into an ordinary `Saga`. Every problem
names the file, line and step. Resolving the paths imports the modules
they name; ``validate_yaml(path, resolve=False)`` checks a file importing
nothing.
"""

from __future__ import annotations

from sagakit.yamlfile.load import (
    DefinitionFileError,
    Outline,
    Problem,
    YamlReport,
    json_schema,
    load_yaml,
    schema_text,
    validate_yaml,
)

__all__ = [
    "DefinitionFileError",
    "Outline",
    "Problem",
    "YamlReport",
    "json_schema",
    "load_yaml",
    "schema_text",
    "validate_yaml",
]
