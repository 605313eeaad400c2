"""Reads the flat key/value layout of deploy/holdfastd.example.yaml (two levels, `key: value`,
comments) into {"section.key": value}, without PyYAML (not in Debian's base Python)."""

from __future__ import annotations


def load(path: str) -> dict:
    out = {}
    section = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if not line.strip():
                continue
            indented = line.startswith(" ")
            key, _, value = line.strip().partition(":")
            value = value.strip().strip('"').strip("'")
            if not indented:
                section = key if not value else ""
                if value or raw.strip().endswith(('""', "''")):
                    out[key] = value
            else:
                out[f"{section}.{key}"] = value
    return out
