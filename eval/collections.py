"""The two collections every eval runs on: the seeds alone, and the seeds beside a slice of a real archive.

`seeds`: the five seed documents (96 passages), where everything was first shaped. `scale`: the seeds
plus ranks 1–N (default 100) of settings.eval_collection_dir (`manifest.tsv` ranks documents by how
close their subject is to the seeds'; text in `docs/<id>.txt`), where a question has thousands of
plausible passages to choose from.

Each collection's index is built once and cached under data/collections/<name>-<fingerprint>/: the
fingerprint covers the files' bytes, the models, the settings that shape tokens and vectors, and the
code that cuts passages, so a rerun loads it and encodes nothing (the vector cache, keyed by model
and text, makes even a rebuild after a change of code cheap).
"""

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from service.config import PROJECT_ROOT, Settings
from service.embed import Encoders
from service.engine import build_index, models_info, settings_note, source_files
from service.index import current_version
from service.tokenize import WordTokenizer

COLLECTIONS = ("seeds", "scale")
DEFAULT_RANKS = 100  # the eval slice the collection's README names
CACHE_ROOT = PROJECT_ROOT / "data" / "collections"
# The code that turns files into passages, tokens and embedded units: a change to it means a new index.
SHAPING_CODE = (
    *sorted((PROJECT_ROOT / "service" / "ingest").glob("*.py")),
    PROJECT_ROOT / "service" / "embed.py",
    PROJECT_ROOT / "service" / "text.py",
    PROJECT_ROOT / "service" / "tokenize.py",
)


class CollectionMissing(Exception):
    """The archive folder for the `scale` collection is not there."""


@dataclass(frozen=True)
class Collection:
    name: str  # "seeds" or "scale"
    files: tuple[Path, ...]
    ranks: int = 0  # archive documents beside the seeds (ranks 1..ranks)

    @property
    def label(self) -> str:
        return "seeds" if not self.ranks else f"seeds + ranks 1–{self.ranks}"


def archive_files(folder: Path, ranks: int) -> list[Path]:
    """docs/<id>.txt of the archive's documents ranked 1..ranks in its manifest.tsv, in rank order."""
    manifest = folder / "manifest.tsv"
    if not manifest.is_file():
        raise CollectionMissing(f"{manifest} 不存在：无法组成规模评测集合（DJQA_EVAL_COLLECTION_DIR）")
    rows = [line.split("\t") for line in manifest.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    ranked = sorted((int(row[0]), row[1]) for row in rows if int(row[0]) <= ranks)
    return [folder / "docs" / f"{doc_id}.txt" for _, doc_id in ranked]


def collection(name: str, settings: Settings, ranks: int = DEFAULT_RANKS) -> Collection:
    """The named collection's files."""
    seeds = source_files(settings.seeds_dir)
    if name == "seeds":
        return Collection(name, tuple(seeds))
    if name == "scale":
        return Collection(name, tuple(seeds + archive_files(settings.eval_collection_dir, ranks)), ranks)
    raise ValueError(f"unknown collection {name!r}")


def fingerprint(files: tuple[Path, ...], settings: Settings, encoders: Encoders) -> str:
    digest = hashlib.sha256()
    for path in (*files, *SHAPING_CODE):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    digest.update(repr(models_info(encoders)).encode() + settings_note(settings).encode())
    return digest.hexdigest()[:16]


def collection_settings(
    chosen: Collection, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, progress: bool = True
) -> Settings:
    """Settings whose index holds the collection: the cached one when its fingerprint matches, else built now."""
    folder = CACHE_ROOT / f"{chosen.name}-{fingerprint(chosen.files, settings, encoders)}"
    indexed = settings.model_copy(
        update={"index_dir": folder / "index", "uploads_dir": folder / "no-uploads", "store": "faiss"}
    )
    if current_version(indexed.index_dir) is None:
        shutil.rmtree(folder, ignore_errors=True)
        build_index(list(chosen.files), indexed, encoders, tokenizer, progress=progress)
    return indexed
