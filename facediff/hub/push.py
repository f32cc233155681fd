"""A model on the Hugging Face Hub in both formats, with its card (``facediff push``).

The repo it writes::

    README.md                     the model card (facediff.hub.card)
    model_index.json              the diffusers pipeline (facediff.hub.pipelines), so that
    unet/  scheduler/  ...          DiffusionPipeline.from_pretrained("user/name") runs it
    facediff/config.yaml          facediff's own export, complete: everything the model was
    facediff/weights.safetensors    trained with, and its weights (what model.save writes)
    facediff/classifier/          an attribute model's shipped classifier, where it has one

The repo is staged in a temporary folder, then uploaded in one commit
(``HfApi.upload_folder``). Model files (weights, configs, pipeline code) that an earlier push
left and this one does not write are deleted in the same commit, so a re-push never leaves
parts of another model behind; other files in the repo (images, notes) are kept. Refusals of
the Hub (no token, a token that cannot write there, no network, offline mode) are one-line
``FacediffError``s saying what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facediff.errors import FacediffError
from facediff.hub.card import CardInputs, model_card

if TYPE_CHECKING:
    from facediff.api import FaceModel

CARD_FILE = "README.md"
# remote files an upload replaces: what a model repo's model consists of (not .gitattributes,
# not images or notes someone added); those this upload does not hold are deleted
REPLACED = ["*.safetensors", "*.bin", "*.json", "*.yaml", "*.py"]
LOGIN = "log in with `hf auth login` or set HF_TOKEN"
_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def check_repo_id(text: str) -> str:
    """``text`` if it is a Hub model repo id (``owner/name``: letters, digits, ``-``, ``_``,
    ``.``; no ``--`` or ``..``; at most 96 characters), else a ``FacediffError``."""
    parts = text.split("/")
    if (len(parts) != 2 or not all(_PART.match(p) for p in parts) or "--" in text
            or ".." in text or len(text) > 96):
        raise FacediffError(f"--repo must be a Hugging Face Hub repo id, OWNER/NAME (letters, "
                            f"digits, '-', '_' and '.'), e.g. alice/faces-64; got {text!r}")
    return text


@dataclass
class Staged:
    """A staged repo: its folder, its files (path in the repo, bytes) and the diffusers
    pipeline's model_index.json."""

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)
    index: dict[str, Any] | None = None


def repo_files(folder: Path) -> list[tuple[str, int]]:
    """Every file under ``folder`` as (its path relative to it, with ``/``; its size), sorted."""
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                  for p in folder.rglob("*") if p.is_file())


def stage(model: FaceModel, folder: str | Path, inputs: CardInputs, *,
          card: str | None = None) -> Staged:
    """Write the repo of ``model`` into ``folder`` (new or empty): the diffusers pipeline at
    its root, facediff's export in ``facediff/`` (float16 with ``inputs.half``) and the card
    (``card``, else the one generated from ``inputs``) as README.md."""
    from facediff.hub.pipelines import FACEDIFF_DIR, INDEX, export_pipeline

    root = export_pipeline(model, folder, half=inputs.half)
    index = json.loads((root / INDEX).read_text())
    # model.save writes a whole export folder: beside the pipeline, then moved into facediff/
    # (replacing the config.yaml export_pipeline put there: the same text)
    own = root.with_name(f".{root.name}-facediff-{os.getpid()}")
    shutil.rmtree(own, ignore_errors=True)
    try:
        model.save(own, half=inputs.half)
        target = root / FACEDIFF_DIR
        target.mkdir(exist_ok=True)
        for entry in own.iterdir():
            if (target / entry.name).is_dir():
                shutil.rmtree(target / entry.name)
            os.replace(entry, target / entry.name)
    finally:
        shutil.rmtree(own, ignore_errors=True)
    from facediff.eval.classifier import CLASSIFIER_DIR, shipped_classifier

    clf = shipped_classifier(model.path)  # an attribute model's (`sample --like` reads it)
    if clf is not None:
        shutil.copytree(clf, root / FACEDIFF_DIR / CLASSIFIER_DIR, dirs_exist_ok=True)
    text = card if card is not None else model_card(model, inputs, index)
    (root / CARD_FILE).write_text(text)
    return Staged(root, repo_files(root), index)


def hub_token(token: str | None = None) -> str:
    """``token``, else the one huggingface_hub finds (HF_TOKEN, or ``hf auth login``'s);
    none at all is a ``FacediffError`` (an upload always needs one)."""
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise FacediffError(f"pushing to the Hugging Face Hub needs a token with write "
                            f"access: {LOGIN} (or pass --token)")
    return found


def check_online() -> None:
    """A ``FacediffError`` when huggingface_hub is in offline mode (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise FacediffError("HF_HUB_OFFLINE is set: facediff push needs the network (unset "
                            "it, or use --dry-run to stage and list the files)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def upload(staged: Staged, repo_id: str, *, token: str | None = None, private: bool = False,
           message: str = "facediff push") -> str:
    """Create ``repo_id`` if it does not exist (``private``: as a private repo; an existing
    repo keeps its visibility) and upload ``staged`` to it in one commit; returns the commit's
    (or the repo's) address. The Hub's refusals are one-line ``FacediffError``s."""
    from huggingface_hub import HfApi, constants, errors

    network = tuple(c for c in (getattr(errors, "HTTPError", None), OSError) if c)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(staged.folder),
                                 repo_type="model", commit_message=message,
                                 delete_patterns=REPLACED)
    except errors.RepositoryNotFoundError as e:
        raise FacediffError(f"the Hugging Face Hub has no repo {repo_id} this token can write "
                            f"to (check the owner, and `hf auth whoami`; or {LOGIN})") from e
    except errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 401:
            raise FacediffError(f"the Hugging Face Hub refused the token (401 Unauthorized): "
                                f"{LOGIN} with a valid token") from e
        if status == 403:
            raise FacediffError(f"the Hugging Face Hub refused to let this token write to "
                                f"{repo_id} (403 Forbidden): it needs a token with write "
                                f"access to {repo_id.split('/')[0]}; {LOGIN}") from e
        raise FacediffError(f"the Hugging Face Hub refused the push to {repo_id}: "
                            f"{_first_line(e)}") from e
    except errors.HFValidationError as e:
        raise FacediffError(f"the Hugging Face Hub cannot take {repo_id}: "
                            f"{_first_line(e)}") from e
    except network as e:  # no network, a proxy, a timeout, offline mode
        raise FacediffError(f"cannot reach the Hugging Face Hub to push {repo_id}: "
                            f"{_first_line(e)}") from e
    return getattr(info, "commit_url", None) or f"{constants.ENDPOINT}/{repo_id}"
