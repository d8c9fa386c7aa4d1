"""Where the community configuration shipped inside the package lives.

The default knowledge, prompts, triage rules and synonyms are package data
(``concierge/defaults/``), so the installed command works from any directory; an
operator's own copy (``concierge init DIR``, then ``CONCIERGE_CONFIG_DIR=DIR``)
replaces them whole.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_CONFIG_DIR = Path(str(resources.files("concierge").joinpath("defaults")))
