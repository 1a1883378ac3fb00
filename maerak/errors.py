"""The project's one exception type. Library code raises it (or a subclass, where a caller must
tell failures apart) with the one line a user sees; only the entry points in pipeline/ turn it
into an exit status (`pipeline/cli.run_verb`)."""
from __future__ import annotations

from collections.abc import Sequence


class MaerakError(Exception):
    """A failure the user can act on: `str(exc)` is the whole message (naming the file, item and
    field at fault where there is one); the entry point prints it and exits 1."""


class InputFileError(MaerakError):
    """A file that cannot be read as input at all (missing, a directory, a device or pipe, over
    the size cap, unreadable); `reason` is the message without the file name, so callers can put
    it in their own `FILE: ID: FIELD: problem` form."""

    def __init__(self, path: object, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class ConfigError(MaerakError):
    """A config file that cannot be used (profiles.yml, a sources file, a stage YAML): missing,
    not YAML, an unknown key, a wrong type or a bad value. The message names the file and key."""


class DataError(MaerakError):
    """Input data with errors; carries every problem found (`maerak.schema.Problem`: FILE: ID:
    FIELD: message), not just the first, so validate and prepare print one line per problem."""

    def __init__(self, problems: Sequence[object]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class EmptyStage(MaerakError):
    """A stage has no rows after every prepare step (no task data?): there is nothing to train on."""

    def __init__(self, stage: int):
        self.stage = stage
        super().__init__(f"stage {stage} has no rows (no task data?)")


class TrainError(MaerakError):
    """A training step that cannot run or failed (missing inputs, Axolotl's exit status); the
    preflight tells it apart to name the config keys the child's error points at."""
