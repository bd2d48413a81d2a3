"""Errors a user can fix, in one hierarchy.

Everything mediacluster raises on purpose is a :class:`MediaclusterError`: bad input, a bad
parameter, a folder that is not what it should be. The command line prints those as
``error: ...`` and exits with 2; any other exception is a bug (exit 1, traceback in the log).
The tuner fails a trial only on a :class:`MediaclusterError` raised by the trial's parameters
(or a numerical error), never on a bug.

Subclasses that describe a bad value also derive from :class:`ValueError`, so code written
against scikit-learn's conventions (``except ValueError``) keeps working.
"""

from __future__ import annotations


def yaml_problem(e: Exception) -> str:
    """A YAML parse error in one line, with where it is: ``line 2, column 1: expected ...``."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(e, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


def interrupted(e: BaseException) -> bool:
    """Whether ``e`` is a Ctrl-C in disguise: a KeyboardInterrupt that compiled code turned into
    another error. A Ctrl-C while numba code runs (fast_hdbscan's ``parallel_boruvka`` in a
    ``tune`` trial or a ``cluster`` fit) reaches Python in numba's unpickling of a constant and
    comes out as "SystemError: CPUDispatcher(...) returned a result with an exception set",
    the KeyboardInterrupt its cause: it was reported as an internal error, a crash log written.
    Used by the CLI (exit 130) and the tuner (no optuna traceback for a trial stopped by it)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class MediaclusterError(Exception):
    """Base class: a problem with what the user gave, stated so they can fix it."""


class InputError(MediaclusterError, ValueError):
    """Input data that cannot be used: a missing file, a bad manifest row, bad vectors."""


class ParameterError(MediaclusterError, ValueError):
    """A parameter value out of range or of the wrong type; ``param`` names it."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class LevelRangeError(ParameterError):
    """``level`` past the last level of the tree a fit made (known only once it is made).
    ``Pipeline.fit`` raises it after finishing the fit at the automatic level, so the fit is not
    lost: ``set_level`` picks one of the levels it has without refitting."""

    def __init__(self, message: str):
        super().__init__(message, "level")


class ConfigError(ParameterError):
    """A pipeline config, names file or search-space file that cannot be used."""


class SpaceError(ConfigError):
    """An invalid tuning search space (the message names the parameter and the problem)."""


class RunDirError(MediaclusterError):
    """A run folder that is missing, foreign, of another schema version, or inconsistent."""


class RunLockedError(RunDirError):
    """Another process is writing the same run folder."""


class ModelFormatError(MediaclusterError, ValueError):
    """A model folder this version of mediacluster cannot (safely) load."""


class OutputError(MediaclusterError, OSError):
    """An output cannot be written (read-only folder, full disk, a file where a folder goes)."""

