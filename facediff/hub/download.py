"""Models on the Hugging Face Hub: ``facediff.load("user/name")`` and every command that takes
a model accept a Hub repo id (a facediff export or a diffusers pipeline), downloaded into the
usual Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) and read from there offline
(``HF_HUB_OFFLINE=1``, or no network and the repo already cached)."""

from __future__ import annotations

import re
from pathlib import Path

from facediff.errors import ModelNotFoundError

# what a model needs from its repo: configs, safetensors weights (a pipeline's .bin U-Net where
# it has no safetensors), the card and a shipped classifier; not other files a repo may hold
ALLOW = ["*.json", "*.yaml", "*.md", "*.safetensors", "unet/*.bin"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_repo_id(text: str) -> bool:
    """``owner/name`` that is not an existing local path."""
    return bool(_REPO_ID.match(text)) and not Path(text).expanduser().exists()


def hub_model(repo_id: str) -> Path:
    """The local folder of a Hub model repo (downloaded, or from the cache); a repo that does
    not exist, is private or gated without a token, or cannot be had offline is a
    ``ModelNotFoundError`` in one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, repo_type="model", allow_patterns=ALLOW))
    except GatedRepoError as e:
        raise ModelNotFoundError(f"{repo_id} is gated on the Hugging Face Hub: accept its terms "
                                 "and log in (`hf auth login` or HF_TOKEN)") from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: no such folder here, and no such model on the "
                                 "Hugging Face Hub (or it is private: log in with `hf auth "
                                 "login` or set HF_TOKEN)") from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: {e}".splitlines()[0]) from e
    except LocalEntryNotFoundError as e:
        raise ModelNotFoundError(
            f"{repo_id}: no such folder here, and not in the Hugging Face cache, which cannot "
            "be filled offline (HF_HUB_OFFLINE is set or the Hub is unreachable)") from e
    except (HfHubHTTPError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotFoundError(f"cannot download {repo_id} from the Hugging Face Hub: "
                                 f"{first}") from e
