"""Shared fixtures: a real embedder (loaded once), real Chroma and SQLite in temp dirs, a
throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import retriever.privacy  # noqa: F401
from config.settings import Settings
from ingest.pipeline import IngestPipeline, build_pipeline
from retriever.components import Components, build_generator
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator
from retriever.models import bundled_embedder_path
from tests import postgres

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "corpora" / "demo"

# One ONNX export of the embedder for every data dir the tests create (and the CLI and server
# subprocesses they start), instead of one per data dir.
os.environ.setdefault(
    "ENCLAVE_EMBED_CACHE_DIR", str(Path(tempfile.gettempdir()) / "enclave-test-models")
)


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(bundled_embedder_path())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # embed_backend matches the `embedder` fixture the components are given (torch), so a
    # component that loads an embedder from settings (an embedder switch) makes the same vectors.
    return Settings(
        data_dir=tmp_path / "data",
        llm_backend="fake",
        watch="off",
        parse_workers=0,
        embed_backend="torch",
    )


@pytest.fixture
def components(settings: Settings, embedder: SentenceTransformerEmbedder) -> Components:
    return Components(settings, embedder=embedder, generator=FakeGenerator())


@pytest.fixture
def pipeline(components: Components) -> Iterator[IngestPipeline]:
    pipe = build_pipeline(components)
    yield pipe
    pipe.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def llama_cpu_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU profile the model's start-up self-test picks on this machine: "safe" where
    llama.cpp's fast kernels crash (its AMX kernels on Intel Xeons), else "fast". Tests that
    run llama.cpp in pytest's own process follow it, so a native crash cannot end the run."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("cpu-profile"), llm_backend="llamacpp")
    generator = build_generator(settings)
    try:
        return str(generator.spec.profile)
    finally:
        generator.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the whole run (skipped where its binaries are missing)."""
    reason = postgres.missing()
    if reason:
        pytest.skip(reason)
    with postgres.temporary_cluster() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    with postgres.temporary_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The `database_url` setting: a test using this runs once with SQLite files (empty) and
    once with a PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_url"))
