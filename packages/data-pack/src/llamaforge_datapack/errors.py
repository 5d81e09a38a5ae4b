"""The one exception base of llamaforge-datapack."""


class DataPackError(Exception):
    """A problem the user can act on: a bad input line, a bad setting, an unreadable file."""

    user_facing = True
