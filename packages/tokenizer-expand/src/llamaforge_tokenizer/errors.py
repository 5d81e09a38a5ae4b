"""The one exception base of llamaforge-tokenizer."""


class TokenizerExpandError(Exception):
    """A problem the user can act on: bad input file, bad tokenizer, existing output dir."""

    user_facing = True
