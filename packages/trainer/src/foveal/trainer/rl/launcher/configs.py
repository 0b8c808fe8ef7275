"""The config files `foveal rl` hands its children, and the token that protects the servers it starts.

A child reads exactly one TOML file (`--config`), written here from the run's config with what the
launcher decided filled in (ports, endpoints, the warm-start checkpoint). The files carry the bearer
token in clear, so they are created with mode 0600 inside `<run dir>/launch/` and the token never
appears on a command line, in an environment variable or in a log. Without `[inference].api_token`,
a fresh random token is made per launch: it guards both planes of the servers and the router.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import tomli_w
from pydantic import BaseModel, SecretStr

from foveal.configs.runs import RLConfig


def launch_token(config: RLConfig) -> SecretStr:
    """The configured `[inference].api_token`, or a new random one for this launch."""
    return config.inference.api_token or SecretStr(secrets.token_urlsafe(32))


def write_private_toml(path: Path, config: BaseModel, secret_keys: dict[tuple[str, ...], SecretStr]) -> Path:
    """`config` as TOML readable by this user only, with the secrets at `secret_keys` written in clear."""
    data = config.model_dump(mode="json", exclude_none=True)  # TOML has no null: a left-out field is its default
    for keys, secret in secret_keys.items():
        table = data
        for key in keys[:-1]:
            table = table.setdefault(key, {})
        table[keys[-1]] = secret.get_secret_value()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode through O_TRUNC
        tomli_w.dump(data, handle)
    return path


def with_token(config: RLConfig, token: SecretStr) -> RLConfig:
    """The run config with `[inference].api_token` set (its children all need it)."""
    return config.model_copy(update={"inference": config.inference.model_copy(update={"api_token": token})})

