"""Where the checkout's folders are: notebooks, the Lambda source root, the template, the sandbox."""

from __future__ import annotations

from pathlib import Path

#: The checkout this package lives in.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
LAMBDA_SOURCE = PROJECT_ROOT / "lambda"
TEMPLATE = PROJECT_ROOT / "cloudformation" / "migration.yaml"
#: Where `make setup` installs DynamoDB Local, and the CLI keeps the sandbox's state.
SANDBOX = PROJECT_ROOT / ".sandbox"
