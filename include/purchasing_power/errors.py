"""Errors that mean "the input is wrong": retrying the task cannot help, so the DAG fails it at
once (AirflowFailException) with this message instead of spending its retries."""

from __future__ import annotations


class InputError(ValueError):
    """Bad or unusable input data; the message names the file, the column or the day."""


class NothingToDo(Exception):
    """The stage has nothing to do for this run (e.g. the anchor's model is already decided);
    the DAG marks the task skipped with this message, and tasks that only follow it are skipped."""
