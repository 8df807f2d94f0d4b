"""Dense vector store: Chroma, embedded (PersistentClient) or a Chroma server (HttpClient),
telemetry off either way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import retriever.privacy  # noqa: F401
from retriever.types import Chunk

COLLECTION = "enclave_chunks"
IDENTITY_KEY = "embedder"


class EmbedderMismatchError(RuntimeError):
    """The index holds vectors of another embedder than the one configured."""


def chunk_from_record(chunk_id: str, text: str, meta: dict[str, Any]) -> Chunk:
    headings = str(meta.get("headings") or "")
    page = meta.get("page")
    return Chunk(
        id=chunk_id,
        document_id=str(meta["document_id"]),
        index=int(meta.get("index", 0)),
        text=text,
        path=str(meta.get("path", "")),
        title=str(meta.get("title", "")),
        collection=str(meta.get("collection", "")),
        page=int(page) if page is not None else None,
        headings=tuple(headings.split(" > ")) if headings else (),
    )


def collection_filter(collections: Sequence[str] | None) -> dict[str, Any] | None:
    """Chroma `where` clause restricting results to the given collections (None: no limit)."""
    if collections is None:
        return None
    return {"collection": {"$in": list(collections)}}


def http_client(host: str, port: int, token: str = "", ssl: bool = False) -> Any:
    """A client of a Chroma server. The token goes as `Authorization: Bearer`: `chroma run`
    1.x checks none, so a proxy in front of it must (see docs/deployment.md)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    auth: dict[str, Any] = {}
    if token:
        auth = {
            "chroma_client_auth_provider": "chromadb.auth.token_authn.TokenAuthClientProvider",
            "chroma_client_auth_credentials": token,
            "chroma_auth_token_transport_header": "Authorization",
        }
    return chromadb.HttpClient(
        host=host,
        port=port,
        ssl=ssl,
        settings=ChromaSettings(anonymized_telemetry=False, **auth),
    )


class ChromaStore:
    def __init__(
        self,
        path: Path,
        collection: str = COLLECTION,
        client: Any = None,
        embedder_identity: str | None = None,
    ) -> None:
        """`collection`: each embedder generation has its own (see retriever/tuning);
        `client`: share an open client instead of opening the folder again;
        `embedder_identity`: claim the collection for this embedder (see `claim`)."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.client = client or chromadb.PersistentClient(
            path=str(path),
            settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
        )
        self.collection = self.client.get_or_create_collection(
            collection, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self.max_batch = int(self.client.get_max_batch_size())
        if embedder_identity:
            self.claim(embedder_identity)

    @property
    def embedder_identity(self) -> str | None:
        value = (self.collection.metadata or {}).get(IDENTITY_KEY)
        return str(value) if value else None

    def claim(self, identity: str) -> None:
        """Record which embedder made the vectors; refuse to mix vectors of two embedders.
        An empty collection takes any identity; an index from before identities were recorded
        was made by the torch backend."""
        recorded = self.embedder_identity
        if recorded == identity:
            return
        legacy_torch = recorded is None and identity.endswith("/torch")
        if self.count() and not legacy_torch:
            raise EmbedderMismatchError(
                f"the index in {self.path} was built by embedder "
                f"{recorded or 'torch (not recorded)'}, but this configuration embeds with "
                f"{identity}: vectors of two embedders cannot be mixed. Set embed_model / "
                "embed_backend back to what built it, or index into a new data directory."
            )
        self.collection.modify(metadata={IDENTITY_KEY: identity})

    def upsert(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> None:
        for start in range(0, len(chunks), self.max_batch):
            part = chunks[start : start + self.max_batch]
            self.collection.upsert(
                ids=[c.id for c in part],
                embeddings=embeddings[start : start + len(part)].tolist(),
                documents=[c.text for c in part],
                metadatas=[c.metadata() for c in part],
            )

    def clear(self) -> None:
        """Drop every vector (the collection is made again, empty, with its metadata): the
        first step of `enclave reindex`."""
        name, metadata = self.collection.name, dict(self.collection.metadata or {})
        self.client.delete_collection(name)
        self.collection = self.client.get_or_create_collection(
            name, embedding_function=None, metadata=metadata or {"hnsw:space": "cosine"}
        )

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        """Every chunk of these documents, in one query: Chroma reads its metadata index
        once per call, so a batch of ~100 new documents was 100 scans for nothing."""
        where: dict[str, Any] = {"document_id": {"$in": list(document_ids)}}
        if document_ids:
            self.collection.delete(where=where)

    def delete_ids(self, ids: Sequence[str]) -> None:
        if ids:
            self.collection.delete(ids=list(ids))

    def update_document(self, document_id: str, **fields: str) -> None:
        """Change metadata (path, collection) of a document's chunks without re-embedding."""
        found = self.collection.get(where={"document_id": document_id}, include=["metadatas"])
        if not found["ids"]:
            return
        metadatas = [{**dict(m), **fields} for m in found["metadatas"] or []]
        self.collection.update(ids=found["ids"], metadatas=metadatas)  # type: ignore[arg-type]

    def ids_for_document(self, document_id: str) -> list[str]:
        return list(self.collection.get(where={"document_id": document_id}, include=[])["ids"])

    def all_document_ids(self) -> set[str]:
        result = self.collection.get(include=["metadatas"])
        return {str(m["document_id"]) for m in result["metadatas"] or []}

    def count(self) -> int:
        return int(self.collection.count())

    def records(self, page: int = 2000) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every stored chunk as (id, text, metadata), read `page` at a time."""
        offset = 0
        while True:
            found = self.collection.get(
                include=["documents", "metadatas"], limit=page, offset=offset
            )
            ids = found["ids"]
            if not ids:
                return
            docs, metas = found["documents"] or [], found["metadatas"] or []
            for cid, text, meta in zip(ids, docs, metas, strict=True):
                yield cid, text or "", dict(meta or {})
            offset += len(ids)

    def get(self, ids: Sequence[str]) -> dict[str, Chunk]:
        if not ids:
            return {}
        result = self.collection.get(ids=list(ids), include=["documents", "metadatas"])
        docs = result["documents"] or []
        metas = result["metadatas"] or []
        return {
            cid: chunk_from_record(cid, text, dict(meta))
            for cid, text, meta in zip(result["ids"], docs, metas, strict=True)
        }

    def query(
        self, vector: np.ndarray, k: int, collections: Sequence[str] | None = None
    ) -> list[tuple[Chunk, float]]:
        """Nearest chunks with their cosine similarity, best first."""
        if collections is not None and not collections:
            return []
        result = self.collection.query(
            query_embeddings=[vector.tolist()],
            n_results=k,
            where=collection_filter(collections),
            include=["documents", "metadatas", "distances"],
        )
        ids = result["ids"][0]
        docs = (result["documents"] or [[]])[0]
        metas = (result["metadatas"] or [[]])[0]
        dists = (result["distances"] or [[]])[0]
        return [
            (chunk_from_record(cid, text, dict(meta)), 1.0 - float(dist))
            for cid, text, meta, dist in zip(ids, docs, metas, dists, strict=True)
        ]
