"""Write `schemas/json/<Event>.json`, the JSON Schema of every event, for non-Python producers.

Run `python -m schemas.generate` (or `make schemas`) after changing an event; a unit test fails
while the files and the models disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas import EVENTS

JSON_DIR = Path(__file__).parent / "json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render() -> dict[str, str]:
    """File name -> file text, for every event."""
    files = {}
    for event in EVENTS:
        schema = {"$schema": _DIALECT, **event.model_json_schema(mode="validation")}
        files[f"{event.__name__}.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def main(out_dir: Path = JSON_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main():
        print(p)
