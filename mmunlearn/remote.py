"""Pre-flight check of the default DVC remote, so that `make pull` without access fails with one
line saying what to set instead of DVC's per-file "Unable to locate credentials" for every file.

`python -m mmunlearn.remote check` reads DVC's merged config (`.dvc/config` + `config.local` +
global / system) through DVC's own API, resolves credentials the way botocore (under dvc-s3)
does, and asks the endpoint for the bucket once; it exits 2 with one line on any gap.
"""
from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from mmunlearn.errors import UserError

ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
KEY_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def default_remote(root: str = ".") -> tuple[str, dict]:
    """Name and merged settings of the repository's default remote (DVC's own config reader)."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        config = repo.config
        name = config["core"].get("remote")
        if not name:
            raise UserError("no default DVC remote: run `dvc remote add -d <name> <url>`")
        return name, dict(config["remote"].get(name, {}))


def endpoint(remote: dict) -> str | None:
    """The S3 endpoint: the remote's `endpointurl`, else the environment, as dvc-s3 resolves it."""
    return remote.get("endpointurl") or next((os.environ[k] for k in ENDPOINT_ENV if os.environ.get(k)), None)


def credentials(remote: dict):
    """botocore credentials for the remote: its own keys, else botocore's chain (environment,
    `profile` / `credentialpath`, ~/.aws, SSO, instance role); None when there are none."""
    import botocore.session
    from botocore.credentials import Credentials
    from botocore.exceptions import BotoCoreError

    if remote.get("access_key_id") and remote.get("secret_access_key"):
        return Credentials(remote["access_key_id"], remote["secret_access_key"], remote.get("session_token"))
    session = botocore.session.Session(profile=remote.get("profile"))
    if remote.get("credentialpath"):
        session.set_config_variable("credentials_file", remote["credentialpath"])
    try:
        return session.get_credentials()
    except BotoCoreError as err:  # e.g. a `profile` that ~/.aws does not define
        raise UserError(f"credentials of the DVC remote: {err}") from err


def missing_hint(name: str, remote: dict, need_endpoint: bool, need_keys: bool) -> str:
    """The one line a newcomer needs: what is missing and the two ways to set it."""
    what = " and ".join(w for w, need in (("no endpoint", need_endpoint), ("no credentials", need_keys)) if need)
    env = ([ENDPOINT_ENV[0]] if need_endpoint else []) + (list(KEY_ENV) if need_keys else [])
    keys = (["endpointurl <url>"] if need_endpoint else []) + (
        ["access_key_id <id>", "secret_access_key <key>"] if need_keys else [])
    local = "; ".join(f"dvc remote modify --local {name} {k}" for k in keys)
    return f"DVC remote '{name}' ({remote.get('url')}) has {what}: export {', '.join(env)}, or run: {local}"


def probe(url: str, endpoint_url: str, creds, remote: dict, timeout: float = 5.0) -> None:
    """One HEAD on the bucket (a single attempt, short timeouts): unreachable endpoint, rejected
    keys or a missing bucket become one line before any download starts."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket = urlsplit(url).netloc
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint_url, region_name=remote.get("region") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key, aws_session_token=creds.token,
        config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}))
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        reason = {"403": "rejected the credentials", "404": f"has no bucket '{bucket}'"}.get(code, f"answered {code}")
        raise UserError(f"S3 endpoint {endpoint_url} {reason} (remote {url})") from err
    except BotoCoreError as err:
        raise UserError(f"cannot reach S3 endpoint {endpoint_url} for remote {url}: {err}") from err


def check(root: str = ".", connect: bool = True) -> str:
    """Raise UserError unless the default remote can be pulled from; returns a one-line summary."""
    name, remote = default_remote(root)
    url = remote.get("url", "")
    if urlsplit(url).scheme != "s3":
        return f"remote '{name}' ({url}): not S3, nothing to check"
    endpoint_url, creds = endpoint(remote), credentials(remote)
    if endpoint_url is None or creds is None:
        raise UserError(missing_hint(name, remote, endpoint_url is None, creds is None))
    if connect:
        probe(url, endpoint_url, creds, remote)
    return f"remote '{name}' ({url}) at {endpoint_url}: " + ("reachable" if connect else "configured")


def main(argv: list[str] | None = None) -> int:
    """`python -m mmunlearn.remote check [--offline]`: exit 0 with a summary, or 2 with one line."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "check" or set(args[1:]) - {"--offline"}:
        print("usage: python -m mmunlearn.remote check [--offline]", file=sys.stderr)
        return 2
    try:
        print(check(connect="--offline" not in args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
