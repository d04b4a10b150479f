"""ddbnb: mass migrations of DynamoDB tables, driven from notebooks."""

from ddbnb.api import *  # noqa: F403
from ddbnb.api import __all__  # noqa: F401

__version__ = "0.1.0"
