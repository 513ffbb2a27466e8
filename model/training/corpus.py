"""Training text as documents: the .txt files under some paths, and the stories in each."""

from __future__ import annotations

from pathlib import Path

from model.tokenizers.tokenizer import EOT


def text_files(paths: list[str]) -> list[Path]:
    """Every .txt file under the given files or folders, in a stable order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.txt") if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def documents(path: Path) -> list[str]:
    """A file's documents: the pieces between <|endoftext|> lines, or the whole file."""
    text = path.read_text(encoding="utf-8")
    parts = text.split(f"\n{EOT}\n") if f"\n{EOT}\n" in text else [text]
    docs = []
    for part in parts:
        part = part.removesuffix(EOT).strip("\n")
        if part.strip():
            docs.append(part)
    return docs
