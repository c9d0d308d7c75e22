"""Reading a models file: errors name the file and the line, a key given twice is refused, and
the file says whether the bundled models stay (``bundled: true|false``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genspool.config import DEFAULT_MODELS, load_models, read_models_file
from genspool.exceptions import ConfigError

BUNDLED = [m["name"] for m in DEFAULT_MODELS]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read_models_file(path)
    return caught.value.message


def test_a_validation_error_names_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n"
        "  - name: a\n"
        "    provider: echo\n"
        "  - name: b\n"
        "    provider: echo\n"
        "    batching:\n"
        "      max_wait_ms: 5\n"
        "      max_batch_size: 0\n",
    )
    message = error_of(path)
    assert message.startswith(f"models file {path}, line 8, "), message
    assert "models[1].batching.max_batch_size: Input should be greater than 0" in message


def test_an_unknown_key_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: a\n    provider: echo\n    bacth_size: 4\n")
    message = error_of(path)
    assert ", line 4, " in message and "bacth_size" in message, message


def test_a_missing_field_names_the_entry_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: a\n    provider: echo\n  - name: b\n")
    message = error_of(path)
    assert ", line 4, models[1].provider: Field required" in message, message


def test_yaml_syntax_errors_name_the_file_and_line_not_a_unicode_string(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: a\n    provider: [echo\n")
    message = error_of(path)
    assert "<unicode string>" not in message
    assert message.startswith(f"models file {path}, line "), message
    assert "not valid YAML" in message


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("models:\n  - name: a\n    provider: echo\n    name: b\n", "name", 4, 2),
        (
            "models:\n  - name: a\n    provider: echo\n    batching:\n"
            "      max_batch_size: 2\n      max_batch_size: 3\n",
            "max_batch_size",
            6,
            5,
        ),
        ("models: []\nbundled: true\nmodels:\n  - {name: a, provider: echo}\n", "models", 3, 1),
        ("models:\n  - {name: a, provider: echo, name: b}\n", "name", 2, 2),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key_and_line(
    tmp_path: Path, text: str, key: str, line: int, first: int
) -> None:
    message = error_of(write(tmp_path, text))
    assert f", line {line}, column " in message, message
    assert f"duplicate key {key!r} (first given on line {first})" in message, message


def test_without_a_bundled_key_a_file_serves_only_its_models(tmp_path: Path) -> None:
    read = read_models_file(write(tmp_path, "models:\n  - {name: a, provider: echo}\n"))
    assert [m.name for m in read.models] == ["a"]
    assert read.bundled is None  # the server says so when it starts


def test_bundled_true_keeps_the_bundled_models_beside_the_file_s(tmp_path: Path) -> None:
    path = write(tmp_path, "bundled: true\nmodels:\n  - {name: a, provider: echo}\n")
    read = read_models_file(path)
    assert [m.name for m in read.models] == ["a", *BUNDLED]
    assert read.bundled is True
    assert load_models(path) == read.models


def test_an_entry_named_like_a_bundled_model_replaces_it(tmp_path: Path) -> None:
    name = BUNDLED[1]
    path = write(tmp_path, f"bundled: true\nmodels:\n  - {{name: {name}, provider: echo}}\n")
    models = read_models_file(path).models
    assert [m.name for m in models] == [name, BUNDLED[0]]
    assert models[0].provider == "echo"


def test_bundled_alone_serves_the_bundled_models(tmp_path: Path) -> None:
    assert [m.name for m in load_models(write(tmp_path, "bundled: true\n"))] == BUNDLED


def test_bundled_false_serves_the_file_s_models_only(tmp_path: Path) -> None:
    path = write(tmp_path, "bundled: false\nmodels: [{name: a, provider: echo}]\n")
    read = read_models_file(path)
    assert [m.name for m in read.models] == ["a"]
    assert read.bundled is False


def test_bundled_must_be_a_boolean_and_top_level_keys_are_known(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "models: []\nbundled: yes please\n"))
    assert ", line 2: bundled must be true or false" in message, message
    message = error_of(write(tmp_path, "models: []\nbundeld: true\n"))
    assert ", line 2: unknown top-level key 'bundeld'" in message, message
    assert "bundled: true|false" in message
