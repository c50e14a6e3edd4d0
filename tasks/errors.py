"""The one error the task layer raises."""


class TaskError(Exception):
    """A task-naming or task-data problem, on one line naming the task and the file.

    The `harness` CLI prints it like its own errors; lm-eval shows it as the task's load failure.
    """
