"""The one exception base of llamaforge-serve."""


class ServeError(Exception):
    """A problem the user can act on (bad model dir, bad settings)."""

    user_facing = True
