"""The one exception base of llamaforge-trainer."""


class TrainError(Exception):
    """A problem the user can act on: bad config, missing data, mismatched model and data."""

    user_facing = True
