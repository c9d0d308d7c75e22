"""OpenAI response bodies, built in one place so every provider returns exactly the same shapes."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from genspool._ids import random_hex

if TYPE_CHECKING:
    import numpy as np

__all__ = ["chat_completion", "embedding_list"]


def chat_completion(
    model: str, content: str, *, prompt_tokens: int, completion_tokens: int, finish_reason: str
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{random_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embedding_list(
    model: str,
    vectors: Sequence[Sequence[float]] | np.ndarray,
    *,
    prompt_tokens: int,
    encoding_format: str = "float",
) -> dict[str, Any]:
    """``encoding_format="base64"`` packs little-endian float32, as OpenAI (and its SDK) do."""
    import numpy as np  # only embedding providers pay for the import

    data = []
    for i, vec in enumerate(vectors):
        arr = np.asarray(vec, dtype="<f4")
        emb: Any = (
            base64.b64encode(arr.tobytes()).decode()
            if encoding_format == "base64"
            else arr.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
