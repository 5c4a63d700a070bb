"""YAML as the project reads it: safe, a repeated key refused with its line, dates left as text.

PyYAML's `safe_load` keeps the last of two equal keys without a word, and turns `2010-13-45` into a bare
`ValueError("month must be in 1..12")` that names neither the file nor the field. Here a repeated key is an
error naming the file and both lines, and timestamps stay strings, so the caller parses each date field and
names it when it is wrong.
"""

from __future__ import annotations

from typing import Any

import yaml

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class YamlDocumentError(ValueError):
    """Text that is not the YAML we accept; the message names the file (or origin) and the line."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps, refusing a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise YamlDocumentError(
                    f"{self.name} line {line}: key {key!r} is repeated (first at line {first_line[key]}); "
                    "keep one, a later value would silently replace the earlier"
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str, origin: str) -> Any:
    """The document in `text`; `origin` (usually the file path) names it in every error."""
    loader = _StrictLoader(text)
    loader.name = origin
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(filter(None, (error.context, error.problem)))
        raise YamlDocumentError(f"{origin}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise YamlDocumentError(f"{origin}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
