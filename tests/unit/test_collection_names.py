"""One rule decides what a collection may be called, wherever a name comes from: the settings,
an upload's form field, an inbox subfolder, the permission rule's access-file lookup."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.collection_names import check_collection_name, is_collection_name
from config.settings import Settings, SettingsError, load_settings
from ingest.pipeline import build_pipeline
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator
from server.app import create_app
from service.permissions import CollectionAccess
from tests.conftest import write

VALID = ["hr", "a", "HR-2024", "team.docs", "eng_ops", "7", "x" * 128]
INVALID = ["", ".hidden", "..", "-x", "_x", "team docs", "données", "a/b", "a\\b", "x" * 129]
INVALID += ["hr\n", "hr\x00"]


@pytest.mark.parametrize("name", VALID)
def test_names_that_may_be_collections(name: str) -> None:
    assert is_collection_name(name) and check_collection_name(name) == name


@pytest.mark.parametrize("name", [*INVALID, None, 3])
def test_names_that_may_not(name: object) -> None:
    assert not is_collection_name(name)


def test_the_refusal_says_what_a_name_may_be() -> None:
    with pytest.raises(ValueError, match=r"'team docs' cannot name a collection: use letters"):
        check_collection_name("team docs")


@pytest.mark.parametrize("name", ["team docs", ".hidden", "données"])
def test_settings_refuse_a_default_collection_no_upload_could_use(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(SettingsError, match=r"default_collection.*use letters, digits"):
        load_settings(environ={"ENCLAVE_DATA": str(tmp_path), "ENCLAVE_DEFAULT_COLLECTION": name})


def test_permissions_read_no_access_file_of_an_invalid_name(settings: Settings) -> None:
    mapped = settings.model_copy(update={"collection_groups": {"team docs": ["staff"]}})
    for folder in ("hr", "team docs", ".hidden"):
        (settings.inbox_dir / folder).mkdir(parents=True)
    access = CollectionAccess(mapped)
    assert access.groups_for("team docs") == frozenset()  # admins only, whatever is mapped
    assert access.groups_for("../inbox") == frozenset()
    # Folders of the inbox are collections only under a valid name.
    assert CollectionAccess(settings).known_collections([]) == {"hr"}


def test_an_inbox_folder_that_cannot_name_a_collection_fails_its_files(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    # Even with quarantine on: the file stays, renaming the folder is the fix.
    settings = settings.model_copy(update={"quarantine": "move"})
    pipeline = build_pipeline(Components(settings, embedder=embedder, generator=FakeGenerator()))
    try:
        good = write(settings.inbox_dir / "hr" / "leave.md", "Parental leave is 16 weeks.\n")
        bad = write(settings.inbox_dir / "team docs" / "plan.md", "The plan is secret.\n")
        report = pipeline.ingest([settings.inbox_dir])
        outcomes = {Path(o.path).name: o for o in report.outcomes}
        assert outcomes["leave.md"].status == "indexed"
        failed = outcomes["plan.md"]
        assert failed.status == "failed" and bad.exists() and good.exists()
        assert failed.error is not None and "'team docs' cannot name a collection" in failed.error
        record = pipeline.registry.get(failed.document_id or "")
        assert record is not None and record.status == "failed" and record.error == failed.error
        assert pipeline.store.ids_for_document(record.id) == []
        assert pipeline.keyword.ids_for_document(record.id) == []
    finally:
        pipeline.close()


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    app = create_app(components.settings, components)
    yield app
    app.extensions["enclave"].shutdown()


@pytest.mark.parametrize("name", ["team docs", ".hidden", "hr\n", "x" * 129])
def test_an_upload_to_an_invalid_name_is_refused(client: FlaskClient, name: str) -> None:
    data = {"file": (io.BytesIO(b"Parental leave is 16 weeks."), "leave.txt"), "collection": name}
    response = client.post("/api/v1/documents", data=data)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "collection_forbidden"
    assert client.get("/api/v1/documents").get_json()["documents"] == []
    data = {"file": (io.BytesIO(b"Parental leave is 16 weeks."), "leave.txt"), "collection": "hr"}
    assert client.post("/api/v1/documents", data=data).status_code == 202
