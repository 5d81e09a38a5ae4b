"""The one exception base of llamaforge-eval."""


class EvalError(Exception):
    """A problem the user can act on: a bad benchmark dir or row, a model without a tokenizer."""

    user_facing = True
