"""The one exception type the engine raises for anything a user did wrong.

Its message is a single short line meant to be shown as-is: by the CLI on stderr (no traceback) and by the
dashboard as a friendly error box.
"""


class VizError(ValueError):
    """A bad input or an unavailable resource, explained in one line."""


class GalleryError(VizError):
    """A gallery file is missing, unreadable or fails validation."""
