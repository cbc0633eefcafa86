"""facesdk model zoo (import package ``facesdk_zoo``): model cards and conversion recipes.

Use it through :mod:`facesdk.zoo`; this package only provides data and recipes
to the core through the ``facesdk`` plugin hooks.
"""

from pathlib import Path

CARDS_DIR = Path(__file__).with_name("cards")
