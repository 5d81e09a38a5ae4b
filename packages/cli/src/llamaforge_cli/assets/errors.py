"""The one exception type of the asset cache."""


class AssetError(Exception):
    """A problem with an asset that the user can act on (name, network, cache)."""

    user_facing = True
