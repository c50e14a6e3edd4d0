"""The one error the task layer raises."""


class TaskError(Exception):
    """A task-naming or task-data problem, on one line naming the task and the file.

    The `harness` CLI prints it like its own errors; lm-eval shows it as the task's load failure.
    """


class MissingTaskData(TaskError):
    """The task has no data here: a file or folder is absent, or the dataset lacks the language.

    Not broken data: `harness tasks` lists such a split as not counted and still succeeds, while a
    file that is there but unreadable makes it fail.
    """
