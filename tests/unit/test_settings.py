from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.section import Section
from config.settings import SECTIONS, Settings, SettingsError, env_name, load_settings, table_name

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


def _readme_tables() -> dict[str, dict[str, tuple[str, str]]]:
    """README's settings tables: heading -> setting -> (environment variable, default)."""
    readme = (ROOT / "README.md").read_text()
    settings = readme[readme.index("\n## Settings\n") :]
    settings = settings[: settings.index("\n## ", 1)]
    tables: dict[str, dict[str, tuple[str, str]]] = {}
    for heading, body in re.findall(r"^### (.+)\n((?:(?!^### ).*\n)*)", settings, re.MULTILINE):
        rows = re.findall(r"^\| `(\w+)` \| `(ENCLAVE_\w+)` \| ([^|]*) \|", body, re.MULTILINE)
        tables[heading] = {name: (env, default) for name, env, default in rows}
    return tables


def test_readme_documents_every_setting() -> None:
    tables = _readme_tables()
    documented = {(name, env) for rows in tables.values() for name, (env, _) in rows.items()}
    expected = {(name, env_name(name)) for name in Settings.model_fields}
    assert expected <= documented, f"undocumented: {sorted(expected - documented)}"


def test_readme_has_one_table_per_concern_with_its_settings() -> None:
    tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    for section in SECTIONS:
        title = section.model_config.get("title")
        assert title in tables, f"README has no '### {title}' table for {section.__name__}"
        assert set(tables[title]) == set(section.model_fields), title
        table = table_name(section)
        where = f"### {title}\n\nTOML table `[{table}]`; defined in `config/{table}.py`.\n"
        assert where in readme, f"README's {title} table should say: {where}"


def _readme_default(text: str) -> object:
    """A README default as a value: `8000`, `true`, `data`; 'empty' and prose ('bundled
    all-MiniLM-L6-v2') both stand for an empty value."""
    quoted = re.fullmatch(r"`([^`]*)`", text.strip())
    if not quoted:
        return "empty"
    return quoted.group(1)


def test_readme_defaults_are_the_code_defaults() -> None:
    wrong = []
    for rows in _readme_tables().values():
        for name, (_, text) in rows.items():
            default = Settings.model_fields[name].get_default(call_default_factory=True)
            shown = _readme_default(text)
            if shown == "empty":
                same = not default
            elif isinstance(default, bool):
                same = shown == str(default).lower()
            elif isinstance(default, int | float):
                same = float(str(shown)) == default
            else:
                same = shown == str(default)
            if not same:
                wrong.append(f"{name}: README {text.strip()}, code {default!r}")
    assert not wrong, "\n".join(wrong)


def test_sections_compose_into_one_flat_settings() -> None:
    """Each field is in exactly one concern, and Settings has them all with every section's
    checks (a validator name reused in two sections would silently drop one)."""
    names = [name for section in SECTIONS for name in section.model_fields]
    assert len(names) == len(set(names)) and set(names) == set(Settings.model_fields)
    for section in SECTIONS:
        assert issubclass(section, Section) and issubclass(Settings, section)
        validators = section.__pydantic_decorators__.field_validators
        assert set(validators) <= set(Settings.__pydantic_decorators__.field_validators)
    assert not {table_name(s) for s in SECTIONS} & set(Settings.model_fields)
    settings = Settings()
    with pytest.raises(ValidationError):  # assignments are checked as before
        settings.top_k = 0


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("ENCLAVE_DEFAULT_COLLECTION", "a b", "default_collection"),
        ("ENCLAVE_DATABASE_URL", "mysql://x/y", "database_url"),
        ("ENCLAVE_PUBLIC_URL", "rag.example.com", "public_url"),
        ("ENCLAVE_COLLECTION_GROUPS", "hr", "collection_groups"),
        ("ENCLAVE_OCR_LANGUAGES", "eng deu", "ocr_languages"),
    ],
)
def test_each_sections_own_checks_apply(variable: str, value: str, field: str) -> None:
    with pytest.raises(SettingsError, match=f"invalid setting '{field}' .*{variable}"):
        load_settings(environ={variable: value})


def test_lists_and_maps_from_the_environment() -> None:
    s = load_settings(
        environ={
            "ENCLAVE_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
            "ENCLAVE_ANSWER_LINK_HOSTS": "wiki.internal",
            "ENCLAVE_ESCALATION_ON_PREMISES_HOSTS": "a.internal,,b.internal",
            "ENCLAVE_COLLECTION_GROUPS": "hr=hr-staff,admins;eng=engineers",
            "ENCLAVE_PUBLIC_URL": "https://rag.example.com/",
        }
    )
    assert s.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert s.answer_link_hosts == ["wiki.internal"]
    assert s.escalation_on_premises_hosts == ["a.internal", "b.internal"]
    assert s.collection_groups == {"hr": ["hr-staff", "admins"], "eng": ["engineers"]}
    assert s.public_url == "https://rag.example.com"


def test_concern_tables_in_toml_are_the_flat_names(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text(
        'data_dir = "/srv/enclave"\n'
        '[retrieval]\ntop_k = 6\nmode = "dense"\n'
        "[model]\nllm_context = 4096\n"
        '[escalation]\npolicy = "on_premises"\nescalation_slots = 2\n'
        '[auth]\nauth_mode = "api_key"\n[auth.collection_groups]\nhr = ["hr-staff"]\n'
    )
    s = load_settings(config, environ={"ENCLAVE_TOP_K": "7"})
    assert s.data_dir == Path("/srv/enclave")
    assert s.top_k == 7  # the environment still wins over the file's table
    assert s.retrieval_mode == "dense" and s.llm_context == 4096
    assert s.escalation_policy == "on_premises" and s.escalation_slots == 2
    assert s.auth_mode == "api_key" and s.collection_groups == {"hr": ["hr-staff"]}


def test_misplaced_or_repeated_names_in_toml_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text("[retrieval]\nllm_context = 4096\n")
    with pytest.raises(SettingsError, match=r"'llm_context' belongs in \[model\]"):
        load_settings(config, environ={})
    config.write_text("top_k = 3\n[retrieval]\ntop_k = 5\n")
    with pytest.raises(SettingsError, match="'top_k' is set twice"):
        load_settings(config, environ={})
    config.write_text("[retrieval]\ntopk = 5\n")
    with pytest.raises(SettingsError, match="unknown setting 'retrieval_topk'"):
        load_settings(config, environ={})


def test_readme_toml_examples_load(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    examples = re.findall(r"^```toml\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert examples
    for number, text in enumerate(examples):
        config = tmp_path / f"example{number}.toml"
        config.write_text(text)
        load_settings(config, environ={})
