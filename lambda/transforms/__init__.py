"""User transforms: ``def transform(item: dict) -> dict | None``."""
