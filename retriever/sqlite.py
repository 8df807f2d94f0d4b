"""The store base's old name, kept so branches written against it still merge; new code uses
`retriever.database.SQLStore`."""

from retriever.database import SQLStore as SQLiteStore

__all__ = ["SQLiteStore"]
