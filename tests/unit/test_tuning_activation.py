"""Switching the embedder: a collection per generation, re-embedded while the old one serves,
an atomic swap with no failed question, catch-up of what was ingested meanwhile, rollback."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cli.main import main
from ingest.pipeline import IngestPipeline
from retriever.components import Components
from retriever.models import bundled_embedder_path
from retriever.store import COLLECTION
from retriever.tuning.pairs import Pair
from retriever.tuning.train import EmbedderTrainer, TrainConfig
from server.app import create_app
from tests.conftest import write
from tests.unit.serving import QUESTION, upload

BACKUPS = "Backups run nightly at two o'clock to the tape library in the basement."
PAIRS = [
    Pair("How long is parental leave?", "Parental leave lasts 16 weeks at full pay."),
    Pair("When do backups run?", BACKUPS),
    Pair("What is the hotel allowance?", "The nightly hotel allowance is 180 euros."),
    Pair("Who approves overtime?", "Overtime needs the approval of the line manager."),
]


@pytest.fixture(scope="module")
def tuned_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that embeds differently from the bundled one (two steps, a high rate)."""
    out = tmp_path_factory.mktemp("tuned")
    config = TrainConfig(batch_size=2, learning_rate=2e-4, max_seq_length=32)
    assert EmbedderTrainer(bundled_embedder_path(), out, config).train(PAIRS).finished
    return out


def _under_data(tuned_model: Path, data_dir: Path, name: str = "tuned-1") -> Path:
    target = data_dir / "models" / name
    shutil.copytree(tuned_model, target)
    return target


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    app = create_app(components.settings, components)
    yield app
    app.extensions["enclave"].shutdown()


def _ask(client: FlaskClient, question: str = QUESTION) -> dict[str, Any]:
    body = {"question": question, "mode": "dense", "answer_mode": "extractive"}
    response = client.post("/api/v1/ask", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.get_json())


def _wait_until_done(client: FlaskClient) -> dict[str, Any]:
    for _ in range(600):
        body = client.get("/api/v1/embedder").get_json()
        if body["activation"]["phase"] in ("done", "failed"):
            return dict(body)
        time.sleep(0.05)
    raise AssertionError("the activation never finished")


def test_activation_swaps_with_no_failed_question_then_rolls_back(
    app: Flask, client: FlaskClient, components: Components, tuned_model: Path
) -> None:
    upload(client)
    before = _ask(client)
    state = app.extensions["enclave"]
    answers: list[tuple[str, int, list[str]]] = []  # (phase when asked, status, source paths)
    stop = threading.Event()

    def keep_asking() -> None:
        asker = app.test_client()
        while not stop.is_set():
            phase = state.activation.status.phase
            response = asker.post("/api/v1/ask", json={"question": QUESTION, "mode": "dense"})
            sources = [s["path"] for s in (response.get_json() or {}).get("sources", [])]
            answers.append((phase, response.status_code, sources))

    def before_swap() -> None:
        # The new collection is full but not serving: questions still go to the old one.
        # Wait for some, and index a document meanwhile: the catch-up must carry it over.
        seen = len(answers)
        for _ in range(600):
            if len(answers) >= seen + 3:
                break
            time.sleep(0.05)
        upload(app.test_client(), "backups.txt", BACKUPS)

    state.activation.before_swap = before_swap
    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        model = _under_data(tuned_model, components.settings.data_dir)
        response = client.post("/api/v1/embedder/activate", json={"model": str(model)})
        assert response.status_code == 202, response.get_data(as_text=True)
        again = client.post("/api/v1/embedder/activate", json={"model": str(model)})
        assert again.status_code == 409  # one activation at a time
        status = _wait_until_done(client)
        for _ in range(600):  # a few questions after the swap too
            if sum(1 for phase, _, _ in answers if phase == "done") >= 3:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        asking.join()

    assert status["activation"]["phase"] == "done", status
    assert status["current"]["number"] == 1 and status["previous"]["number"] == 0
    phases = {phase for phase, _, _ in answers}
    assert {"embedding", "done"} <= phases
    assert all(code == 200 for _, code, _ in answers), answers
    assert all(sources and sources[0].endswith("leave.txt") for _, _, sources in answers)

    # The components serve the tuned model from its own collection, the pipeline writes there.
    assert components.store.collection.name == f"{COLLECTION}_g1"
    assert components.answers.searcher.store is components.store
    assert components.answers.searcher.embedder.inner is components.embedder  # type: ignore[attr-defined]
    assert components.answers.evidence.embedder is components.answers.searcher.embedder
    assert state.pipeline.store is components.store
    generation_dir = components.settings.data_dir / "models" / "generations" / "1"
    assert Path(components.embedder.path) == generation_dir  # type: ignore[attr-defined]
    tuned = _ask(client)
    assert tuned["sources"][0]["path"] == before["sources"][0]["path"]
    assert tuned["sources"][0]["score"] != pytest.approx(before["sources"][0]["score"])
    # Indexed during the re-embedding, found after the swap (caught up).
    assert _ask(client, "When do backups run?")["sources"][0]["path"].endswith("backups.txt")

    response = client.post("/api/v1/embedder/rollback")
    assert response.status_code == 202
    status = _wait_until_done(client)
    assert status["current"]["number"] == 0 and status["previous"]["number"] == 1, status[
        "activation"
    ]
    assert components.store.collection.name == COLLECTION
    restored = _ask(client)  # the old model's results again (plus the document added since)
    old = {s["path"]: s["score"] for s in before["sources"]}
    again = {s["path"]: s["score"] for s in restored["sources"] if s["path"] in old}
    assert again == pytest.approx(old)
    assert _ask(client, "When do backups run?")["sources"][0]["path"].endswith("backups.txt")


def test_the_api_loads_models_only_from_the_data_dir(
    client: FlaskClient, tuned_model: Path
) -> None:
    response = client.post("/api/v1/embedder/activate", json={"model": str(tuned_model)})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_model"
    assert client.post("/api/v1/embedder/rollback").status_code == 409


def test_the_api_loads_no_model_from_the_folders_others_fill(
    app: Flask, client: FlaskClient, tuned_model: Path
) -> None:
    """Review 2: the inbox (whose collection folders people outside the server may write),
    uploads, the trash and quarantine are under the data dir, but a model there is theirs."""
    settings = app.extensions["enclave"].settings
    for folder in (settings.inbox_dir / "eng", settings.trash_dir, settings.quarantine_dir):
        model = shutil.copytree(tuned_model, folder / "tuned")
        response = client.post("/api/v1/embedder/activate", json={"model": str(model)})
        assert response.status_code == 400, folder
        assert response.get_json()["error"]["code"] == "invalid_model"


def test_cli_activate_rollback_and_cleanup(
    pipeline: IngestPipeline,
    components: Components,
    tuned_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ENCLAVE_LLM_BACKEND", "fake")
    monkeypatch.setenv("ENCLAVE_EMBED_BACKEND", "torch")  # what the fixture indexed with
    pipeline.ingest_file(write(tmp_path / "docs" / "backups.txt", BACKUPS))
    data = str(components.settings.data_dir)

    def status() -> dict[str, Any]:
        assert main(["tune", "status", "--data", data, "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out.splitlines()[-1]))

    def ask() -> dict[str, Any]:
        argv = ["ask", "When do backups run?", "--mode", "dense", "--answer-mode", "extractive"]
        assert main([*argv, "--data", data, "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out.splitlines()[-1]))

    assert main(["tune", "rollback", "--data", data]) == 1  # nothing activated yet
    before = ask()
    assert main(["tune", "activate", str(tuned_model), "--data", data]) == 0
    assert status()["current"]["number"] == 1
    first = ask()
    assert first["sources"][0]["path"] == before["sources"][0]["path"]
    assert first["sources"][0]["score"] != pytest.approx(before["sources"][0]["score"])

    assert main(["tune", "activate", str(tuned_model), "--data", data]) == 0
    state = status()
    assert (state["current"]["number"], state["previous"]["number"]) == (2, 1)
    # Generation 0 can no longer be rolled back to: its collection is gone, 1 and 2 remain.
    names = {c.name for c in components.store.client.list_collections()}
    assert names == {f"{COLLECTION}_g1", f"{COLLECTION}_g2"}
    generations = components.settings.data_dir / "models" / "generations"
    assert sorted(p.name for p in generations.iterdir()) == ["1", "2"]

    assert main(["tune", "rollback", "--data", data]) == 0
    assert status()["current"]["number"] == 1
    assert ask()["sources"][0]["score"] == pytest.approx(first["sources"][0]["score"])
