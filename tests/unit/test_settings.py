from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_config_or_environment() -> None:
    s = load_settings(environ={})
    assert s.data_dir == Path("data")
    assert s.port == 8000 and s.host == "127.0.0.1"
    assert s.retrieval_mode == "hybrid"


def test_precedence_defaults_then_toml_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text('top_k = 7\nport = 9000\ndata_dir = "/srv/enclave"\n')
    s = load_settings(config, environ={"ENCLAVE_PORT": "9100"})
    assert s.top_k == 7  # from the file
    assert s.port == 9100  # the environment wins over the file
    assert s.data_dir == Path("/srv/enclave")


def test_config_path_from_environment_and_data_alias(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text("llm_max_tokens = 64\n")
    s = load_settings(environ={"ENCLAVE_CONFIG": str(config), "ENCLAVE_DATA": "/tmp/x"})
    assert s.llm_max_tokens == 64
    assert s.data_dir == Path("/tmp/x")


def test_invalid_value_names_the_setting_and_its_source() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(environ={"ENCLAVE_TOP_K": "many"})
    assert "top_k" in str(err.value) and "ENCLAVE_TOP_K" in str(err.value)


def test_out_of_range_and_bad_choice_are_rejected() -> None:
    with pytest.raises(SettingsError, match="port"):
        load_settings(environ={"ENCLAVE_PORT": "70000"})
    with pytest.raises(SettingsError, match="retrieval_mode"):
        load_settings(environ={"ENCLAVE_RETRIEVAL_MODE": "magic"})


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("topk = 3\n")
    with pytest.raises(SettingsError, match="unknown setting 'topk'"):
        load_settings(config, environ={})


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("top_k = = 3")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, environ={})


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \| `(ENCLAVE_\w+)` \|", readme, re.MULTILINE))
    expected = {(name, env_name(name)) for name in Settings.model_fields}
    assert expected <= documented, f"undocumented: {sorted(expected - documented)}"
