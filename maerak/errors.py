"""The project's one exception type. Library code raises it (or a subclass, where a caller must
tell failures apart) with the one line a user sees; only the entry points in pipeline/ turn it
into an exit status."""
from __future__ import annotations


class MaerakError(Exception):
    """A failure the user can act on: `str(exc)` is the whole message (naming the file, item and
    field at fault where there is one); the entry point prints it and exits 1."""
