"""The one error type of the stack runner: its message is the one line the user sees."""


class StackError(Exception):
    pass
