"""The merge library's one error class."""


class MergeError(Exception):
    """A problem with a recipe or its models, as one line naming the key, model or tensor.

    Callers show the message as it is (the `harness` CLI prints it on one line and exits
    non-zero); anything else the library raises is a bug.
    """
