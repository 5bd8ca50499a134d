"""Where the tests find the repository and the real data (../shared/data beside the checkout)."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
