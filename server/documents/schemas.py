"""Request and response models of the document library."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "indexed", "failed", "deleted"]


class PageProgress(BaseModel):
    done: int
    total: int


class Document(BaseModel):
    """A document as the API shows it: the registry's fields, its file name, when it was
    last indexed and, while it is being read, its pages done."""

    id: str
    path: str
    collection: str
    title: str
    status: Status
    chunks: int
    error: Annotated[str | None, Field(description="Why it failed.")]
    size: Annotated[int, Field(description="Bytes.")]
    sha256: str
    updated_at: float
    name: Annotated[str, Field(description="The file name.")]
    indexed_at: float | None
    pages: Annotated[
        PageProgress | None,
        Field(description="While pending and being read (a PDF, a scan being OCRed)."),
    ]


class DocumentList(BaseModel):
    documents: list[Document]
    counts: Annotated[
        dict[str, int], Field(description="Documents by status (those the caller may see).")
    ]


class Upload(BaseModel):
    """multipart/form-data."""

    file: bytes
    collection: Annotated[
        str | None,
        Field(description="The collection to add it to (default: `default_collection`)."),
    ] = None


class Uploaded(BaseModel):
    id: str
    status: Status
    name: Annotated[str, Field(description="The file name.")]


class Pending(BaseModel):
    id: str
    status: Literal["pending"]


class Deleted(BaseModel):
    id: str
    status: Literal["deleted"]
    file: Annotated[
        Literal["removed", "trash", "kept"],
        Field(
            description="An upload is removed, a drop-folder file moved to the trash "
            "folder, any other file kept where it is."
        ),
    ]
