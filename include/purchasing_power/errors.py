"""Errors that mean "the input is wrong": retrying the task cannot help, so the DAG fails it at
once (AirflowFailException) with this message instead of spending its retries."""

from __future__ import annotations


class InputError(ValueError):
    """Bad or unusable input data; the message names the file, the column or the day."""


class NothingToDo(Exception):
    """The stage has nothing to do for this run (e.g. the anchor's model is already decided);
    the DAG marks the task skipped with this message, and tasks that only follow it are skipped."""


class SourceError(InputError):
    """The source cannot be used as it is; the message names the file and the column."""


class MissingInput(RuntimeError):
    """A stage found no artefact of the stage it depends on (e.g. score without a gate
    decision); the message names the path and the task to run first."""
