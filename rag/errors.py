"""Domain errors. The CLI prints str(error) as one line on stderr and exits 1, with no traceback.

Every message names the fix, e.g. "no index at ~/.cache/rag/index: run `rag index PATH` first".
"""


class RagError(Exception):
    """A user-facing error whose message says what to do."""


class IndexMissing(RagError):
    pass


class IndexMismatch(RagError):
    pass


class IndexCorrupt(RagError):
    pass


class ModelUnavailable(RagError):
    pass


class BadInput(RagError):
    pass


class DataLeak(RagError):
    pass


class IndexBusy(RagError):
    """Another process holds the index's write lock."""


class WriteFailed(RagError):
    """The disk refused a write (full, read-only, gone); what was saved before is untouched."""


class BackendUnavailable(RagError):
    """A database server or a Ray cluster that cannot be reached, refused us, or lacks what we need."""
