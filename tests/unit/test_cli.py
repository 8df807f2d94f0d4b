"""The `enclave` command line (cli/), driven through click's CliRunner: argument handling, the
exit codes users script against (0 done, 1 failed, 2 usage or settings, 130 interrupted) and
the output of the commands that touch data, on a real identity store, audit log, registry,
Chroma and embedder (the language model is the fake: extractive answers never call it)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import enclave, main
from config.settings import Settings
from service.identity import IdentityStore
from tests.conftest import write

LEAVE = (
    "# Leave policy\n\nParental leave lasts 16 weeks at full pay. Annual leave is 25 days a year "
    "for full-time employees, and unused days carry over until March.\n"
)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data dir; the model boundary faked, the torch embedder (no ONNX export)."""
    for name in ("ENCLAVE_CONFIG", "ENCLAVE_DATA", "ENCLAVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENCLAVE_LLM_BACKEND", "fake")
    monkeypatch.setenv("ENCLAVE_EMBED_BACKEND", "torch")
    monkeypatch.setenv("ENCLAVE_PARSE_WORKERS", "0")
    return tmp_path / "data"


def run(data: Path, *args: str, input: str | io.BytesIO | None = None) -> Result:
    return CliRunner().invoke(enclave, [*args, "--data", str(data)], input=input)


def json_line(result: Result) -> object:
    return json.loads(result.stdout.strip().splitlines()[-1])


# Arguments and exit codes


def test_help_lists_every_command_and_exits_0() -> None:
    result = CliRunner().invoke(enclave, ["--help"])
    assert result.exit_code == 0
    commands = "ingest serve mcp worker reindex ask status users groups keys audit eval tune"
    for command in commands.split(" "):
        assert f"  {command} " in result.stdout, command
    for group, commands in {
        "users": "add list disable enable role password",
        "groups": "add remove list add-member remove-member",
        "keys": "create list revoke",
        "audit": "tail",
        "eval": "retrieval answers",
        "tune": "embedder pairs activate rollback status",
    }.items():
        result = CliRunner().invoke(enclave, [group, "--help"])
        assert result.exit_code == 0, group
        assert all(f"  {c} " in result.stdout for c in commands.split()), group


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Usage: enclave"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["ask"], "Missing argument 'QUESTION'"),
        (["ask", "q", "--mode", "fuzzy"], "'fuzzy' is not one of"),
        (["ask", "q", "--top-k", "many"], "'many' is not a valid integer"),
        (["ask", "q", "--top-k", "0"], "0 is not in the range x>=1"),
        (["users", "add", "ann", "--role", "root"], "'root' is not one of"),
        (["keys", "create"], "Missing option '--user'"),
        (["groups", "add-member", "hr"], "Missing argument 'USER'"),
        (["eval", "answers"], "Missing option '--qa'"),
        (["tune", "activate"], "Missing argument 'MODEL'"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_eval_retrieval_needs_exactly_one_dataset(data: Path, tmp_path: Path) -> None:
    for args in ([], ["--beir", str(tmp_path), "--qa", str(tmp_path)]):
        result = run(data, "eval", "retrieval", *args)
        assert result.exit_code == 2
        assert "name one of --beir DIR or --qa DIR" in result.stderr
    assert not (data / "eval").exists()  # refused before anything was read or indexed


def test_settings_errors_exit_2(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(enclave, ["status", "--config", str(tmp_path / "none.toml")])
    assert result.exit_code == 2
    assert result.stderr.startswith("enclave: config file not found")
    monkeypatch.setenv("ENCLAVE_PORT", "eighty")
    result = run(data, "serve")
    assert result.exit_code == 2 and "enclave: " in result.stderr and "port" in result.stderr


def test_serve_refuses_auth_none_off_loopback_before_taking_the_data_dir(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--host` reaches the settings: auth mode none on 0.0.0.0 is refused (2), nothing
    started and the data dir not taken."""

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve went as far as serving")  # (rather than block the test)

    monkeypatch.setattr("waitress.serve", never)
    result = run(data, "serve", "--host", "0.0.0.0", "--port", "8123")
    assert result.exit_code == 2
    assert "only allowed on loopback, not host '0.0.0.0'" in result.stderr
    assert not (data / ".writer.lock").exists()


def test_main_returns_the_command_exit_code(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`main` (the console script and `python -m cli`) returns what the command decided."""
    assert main(["status", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == {}
    assert main(["ingest", "--data", str(data)]) == 2
    assert "name files or folders to ingest, or --retry-failed" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "Private question answering" in capsys.readouterr().out


# Users, groups, keys and the audit log, on the real stores


def test_users_groups_and_roles(data: Path) -> None:
    result = run(data, "users", "add", "ann", "--group", "hr", "--group", "ops")
    assert result.exit_code == 0 and result.stdout == "user ann added (role ask)\n"
    assert run(data, "users", "role", "ann", "ingest").exit_code == 0
    assert run(data, "users", "disable", "ann").stdout == "user ann disabled\n"
    (ann,) = json_line(run(data, "users", "list", "--json"))  # type: ignore[misc]
    assert (ann["name"], ann["role"], ann["disabled"]) == ("ann", "ingest", True)
    assert sorted(ann["groups"]) == ["hr", "ops"]
    assert run(data, "users", "enable", "ann").exit_code == 0
    listed = run(data, "users", "list").stdout.split()
    assert listed[:3] == ["ann", "ingest", "enabled"]

    assert run(data, "groups", "remove-member", "ops", "ann").exit_code == 0
    assert run(data, "groups", "add", "legal").exit_code == 0
    assert run(data, "groups", "add-member", "legal", "ann").stdout == (
        "group legal: add-member done\n"
    )
    assert json_line(run(data, "groups", "list", "--json")) == {
        "hr": ["ann"],
        "legal": ["ann"],
        "ops": [],
    }
    assert run(data, "groups", "remove", "ops").exit_code == 0
    assert "ops" not in run(data, "groups", "list").stdout


def test_identity_errors_exit_1_naming_the_command(data: Path) -> None:
    assert run(data, "users", "add", "ann").exit_code == 0
    result = run(data, "users", "add", "ann")
    assert result.exit_code == 1
    assert result.stderr.startswith("enclave users add: ")
    result = run(data, "groups", "add-member", "nobody-group", "ghost")
    assert result.exit_code == 1 and result.stderr.startswith("enclave groups add-member: ")
    result = run(data, "keys", "create", "--user", "ghost")
    assert result.exit_code == 1 and result.stderr.startswith("enclave keys create: ")


def test_passwords_come_from_stdin_and_need_8_characters(data: Path) -> None:
    result = run(data, "users", "add", "bob", "--password-stdin", input="short\n")
    assert result.exit_code == 2
    assert result.stderr == "enclave: a password needs at least 8 characters\n"
    result = run(data, "users", "add", "bob", "--password-stdin", input="a long passphrase\n")
    assert result.exit_code == 0
    assert run(data, "users", "password", "bob", input="another passphrase\n").exit_code == 0
    settings = Settings(data_dir=data)
    store = IdentityStore(settings.database_for(settings.identity_path))
    try:
        assert store.check_password("bob", "a long passphrase") is None
        user = store.check_password("bob", "another passphrase")
        assert user is not None and user.name == "bob"
    finally:
        store.close()


def test_keys_are_shown_once_work_and_revoke(data: Path) -> None:
    assert run(data, "users", "add", "ann").exit_code == 0
    refused = run(data, "keys", "create", "--user", "ann", "--scope", "ingest")
    assert refused.exit_code == 1 and "a key cannot have scope 'ingest'" in refused.stderr
    assert refused.stdout == ""  # no secret printed for a key that was not made
    assert run(data, "users", "role", "ann", "ingest").exit_code == 0
    result = run(data, "keys", "create", "--user", "ann", "--scope", "ingest")
    assert result.exit_code == 0
    secret = result.stdout.strip()
    assert "shown once, store it now" in result.stderr and secret not in result.stderr
    created = json_line(run(data, "keys", "create", "--user", "ann", "--expires", "30d", "--json"))
    assert isinstance(created, dict)
    assert created["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=60)

    settings = Settings(data_dir=data)
    store = IdentityStore(settings.database_for(settings.identity_path))
    try:
        key = store.authenticate_key(secret)
        assert key is not None and key.user == "ann" and key.scope == "ingest"
        listed = json_line(run(data, "keys", "list", "--user", "ann", "--json"))
        assert isinstance(listed, list) and len(listed) == 2
        assert secret not in json.dumps(listed) and created["key"] not in json.dumps(listed)
        assert run(data, "keys", "revoke", key.id).stdout == f"key {key.id} revoked\n"
        assert store.authenticate_key(secret) is None
        assert f"{key.id} " in run(data, "keys", "list").stdout
        assert "revoked" in run(data, "keys", "list").stdout
    finally:
        store.close()


@pytest.mark.parametrize("expires", ["soon", "30x", "2026-13-01"])
def test_a_bad_expiry_is_a_settings_error(data: Path, expires: str) -> None:
    assert run(data, "users", "add", "ann").exit_code == 0
    result = run(data, "keys", "create", "--user", "ann", "--expires", expires)
    assert result.exit_code == 2
    assert f"--expires {expires!r}: use 30d, 12h, 90m or YYYY-MM-DD" in result.stderr


def test_every_change_is_audited_by_the_cli_user(data: Path) -> None:
    run(data, "users", "add", "ann", "--role", "admin")
    run(data, "groups", "add", "hr")
    run(data, "keys", "create", "--user", "ann")
    result = run(data, "audit", "tail", "--json")
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["action"] for e in entries] == ["user_add", "group_add", "key_create"]  # oldest first
    assert all(e["actor"].startswith("cli:") for e in entries)
    only = run(data, "audit", "tail", "--action", "group_add", "-n", "5", "--json")
    assert [json.loads(line)["target"] for line in only.stdout.splitlines()] == ["hr"]
    assert run(data, "audit", "tail", "--actor", "nobody").stdout == ""


def test_ctrl_c_exits_130(data: Path) -> None:
    class Interrupted(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if size == 0:  # click's check that this is a binary stream
                return b""
            raise KeyboardInterrupt

        read1 = readline = read  # type: ignore[assignment]

    assert run(data, "users", "add", "ann").exit_code == 0
    result = run(data, "users", "password", "ann", input=Interrupted())
    assert result.exit_code == 130 and result.stderr == "enclave: interrupted\n"


# Documents: ingest, status, ask, tune status, on a real index


def test_ingest_status_and_ask_on_a_real_index(data: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "leave.md", LEAVE)
    result = run(data, "ingest", str(docs), "--json")
    assert result.exit_code == 0, result.output
    summary = json_line(result)
    assert isinstance(summary, dict) and (summary["indexed"], summary["failed"]) == (1, 0)
    assert result.stdout.startswith("1 indexed, 0 moved, 0 unchanged")

    again = run(data, "ingest", str(docs))
    assert again.exit_code == 0 and again.stdout.startswith("0 indexed, 0 moved, 1 unchanged")

    status = json_line(run(data, "status", "--json"))
    assert isinstance(status, dict) and status["documents"]["indexed"] == 1
    assert "  indexed  1\n" in run(data, "status").stdout

    answer = run(
        data, "ask", "How long is parental leave?", "--answer-mode", "extractive", "--json"
    )
    assert answer.exit_code == 0, answer.output
    body = json_line(answer)
    assert isinstance(body, dict) and "16 weeks" in body["answer"]
    assert body["sources"][0]["title"] and body["sources"][0]["path"].endswith("leave.md")
    text = run(data, "ask", "How long is parental leave?", "--answer-mode", "extractive")
    assert "16 weeks" in text.stdout and "\nSources:\n  [1] " in text.stdout

    served = json_line(run(data, "tune", "status", "--json"))
    assert isinstance(served, dict) and served["previous"] is None
    assert run(data, "tune", "rollback").exit_code == 1  # nothing activated yet


def test_ingest_of_a_missing_path_fails_with_1(data: Path, tmp_path: Path) -> None:
    result = run(data, "ingest", str(tmp_path / "no-such-folder"))
    assert result.exit_code == 1
    assert result.stderr.startswith("enclave: ") and "no-such-folder" in result.stderr


# Offline evaluation and tuning data, on real files


def _qa_folder(folder: Path) -> Path:
    passages = [
        ("p1", "Parental leave lasts 16 weeks at full pay."),
        ("p2", "The data centre in Leeds is cooled by outside air for most of the year."),
        ("p3", "Expense claims are paid on the last working day of each month."),
    ]
    qa = [
        ("How long is parental leave?", "16 weeks"),
        ("When are expense claims paid?", "last working day"),
    ]
    write(
        folder / "passages.jsonl",
        "".join(json.dumps({"id": i, "passage": p}) + "\n" for i, p in passages),
    )
    write(
        folder / "qa.jsonl",
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in qa),
    )
    return folder


def test_eval_retrieval_and_answers_on_a_qa_folder(data: Path, tmp_path: Path) -> None:
    qa = _qa_folder(tmp_path / "tiny-qa")
    result = run(data, "eval", "retrieval", "--qa", str(qa), "--mode", "dense", "--json")
    assert result.exit_code == 0, result.output
    body = json_line(result)
    assert isinstance(body, dict)
    assert (body["answer_in_top5"], body["queries"], body["mode"]) == (1.0, 2, "dense")
    assert "answer_in_top5   1.0\n" in result.stdout  # one aligned line per metric first
    assert list((data / "eval").iterdir())  # indexed in the data dir's eval cache

    details = tmp_path / "answers.jsonl"
    result = run(
        data, "eval", "answers", "--qa", str(qa), "--mode", "extractive", "--limit", "1",
        "--details", str(details), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json_line(result)
    assert isinstance(body, dict) and (body["questions"], body["mode"]) == (1, "extractive")
    assert body["contains_gold"] == 1.0
    (line,) = details.read_text().splitlines()
    record = json.loads(line)
    assert "16 weeks" in record["answer"] and record["abstention_reason"] is None


def test_eval_of_a_folder_without_the_files_fails_with_1(data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run(data, "eval", "retrieval", "--qa", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert "not a passages + QA folder" in result.stderr


def test_tune_pairs_from_a_beir_folder(data: Path, tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    write(beir / "corpus.jsonl", json.dumps({"_id": "d1", "title": "Leave", "text": LEAVE}) + "\n")
    write(beir / "queries.jsonl", json.dumps({"_id": "q1", "text": "parental leave?"}) + "\n")
    write(beir / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    out = tmp_path / "pairs.jsonl"
    result = run(data, "tune", "pairs", "--beir", str(beir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"1 pairs from {beir} (train split) written to {out}\n"
    (pair,) = map(json.loads, out.read_text().splitlines())
    assert pair["query"] == "parental leave?" and pair["passage"].startswith("Leave\n")
    missing = run(data, "tune", "pairs", "--beir", str(beir), "--split", "test", "--out", str(out))
    assert missing.exit_code == 1 and "with a test split" in missing.stderr
