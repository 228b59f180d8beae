"""Settings: one frozen struct, read from the environment (``LEDGERSHARE_*``).

The local stack writes the endpoints it started to ``<home>/stack.json``; settings read
that file when present, and any environment variable overrides it. Real deployments set
the environment only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec

from contracts.subjects import INBOX_PREFIX

ENV_PREFIX = "LEDGERSHARE_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the parts are and how they are tuned."""

    home: str = ".ledgershare"
    nats_url: str = "nats://127.0.0.1:4222"
    # With deploy/nats/production.conf: credentials in the URL (nats://user:pw@host:port)
    # and the user's private inbox prefix (_INBOX_<user>). Services answer only replies
    # under such a prefix (contracts.subjects.safe_reply), so no other is accepted here.
    nats_inbox_prefix: Annotated[str, msgspec.Meta(pattern=rf"\A{INBOX_PREFIX}\Z")] = "_INBOX"
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5433/ledgershare"
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "ledgershare"
    # No default keys: the local stack makes random ones (deploy/credentials.py).
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    stream: str = "EVENTS"
    stream_replicas: int = 1
    duplicate_window_s: float = 120.0
    request_timeout_s: float = 5.0
    consistency_wait_s: float = 5.0
    max_in_flight: int = 256
    log_level: str = "INFO"
    log_json: bool = True
    # identity: token keys (base64url raw Ed25519); the private key only identity needs.
    token_private_key: str = ""
    token_public_key: str = ""
    # Public keys of earlier signing keys (comma-separated), accepted until their tokens
    # expire: rotate by giving identity a new private key and listing the old public one.
    token_previous_public_keys: str = ""
    # identity: the key (base64, >= 16 bytes) of the keyed hash that names account and
    # openid claim subjects; fixed for the life of the log (a new one loses the claims).
    subject_key: str = ""
    session_ttl_s: float = 3600.0
    drive_ttl_s: float = 900.0
    # Argon2id cost (argon2-cffi's RFC 9106 low-memory profile by default).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # Costs below OWASP's minimum are refused unless this is set (the tests set it, to
    # hash fast; nothing else should).
    argon2_below_owasp_for_tests: bool = False
    # identity's password work: threads of its own, and how many may wait for them
    # before a check is refused as busy (a flood then costs a bounded queue, not a
    # backlog every other request waits behind).
    argon2_workers: Annotated[int, msgspec.Meta(ge=1)] = 2
    argon2_queue: Annotated[int, msgspec.Meta(ge=0)] = 64
    # cloud-drive password lockout: free attempts, then base * 2^(n - free) seconds.
    drive_free_attempts: int = 3
    drive_lock_base_s: float = 30.0
    drive_lock_max_s: float = 86400.0
    # storage: the cloud drive.
    quota_bytes: int = 400 * 1024 * 1024
    upload_part_bytes: int = 16 * 1024 * 1024
    upload_reservation_s: float = 3600.0
    presign_ttl_s: int = 600
    sweep_interval_s: float = 30.0
    # sync: how long a device's lease lasts unless renewed (a request may ask for less).
    sync_lease_s: float = 300.0
    # WeChat web OAuth (snsapi_base): identity exchanges login codes with the app secret;
    # the gateway sends browsers to the authorize page. `make run` and the tests point
    # both at the local stand-in (deploy/wechat.py).
    wechat_appid: str = ""
    wechat_secret: str = ""
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_open_base: str = "https://open.weixin.qq.com"
    wechat_proof_ttl_s: float = 600.0
    # gateway: the public HTTP edge (Member Center pages and the desktop program's API).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_max_body_bytes: int = 256 * 1024
    # Connections and requests one gateway process serves at once (503 past it).
    gateway_max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000
    # Where members reach the gateway (https://host), for WeChat's redirect_uri; ""
    # takes it from each request (fine without a proxy in front).
    gateway_public_url: str = ""
    # The throttled operations (logins, registration, binding, passwords): how many calls
    # one client address and one account may make per fixed window, across all gateways.
    # A client's allowance is larger: an office or a carrier-grade NAT shares an address.
    gateway_limit_per_client: Annotated[int, msgspec.Meta(ge=1)] = 60
    gateway_limit_per_account: Annotated[int, msgspec.Meta(ge=1)] = 10
    gateway_limit_window_s: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    # Reverse proxies (IP addresses or CIDR networks, comma-separated) whose
    # X-Forwarded-For names the client; from any other peer the header is ignored.
    gateway_trusted_proxies: str = ""
    # the CLI's client commands: a gateway to call (its URL) instead of the bus ("").
    gateway_url: str = ""

    @property
    def nats_servers(self) -> list[str]:
        """The NATS URLs to try (``nats_url`` may list a cluster, comma-separated)."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return msgspec.structs.replace(self, **changes)


def _json_file(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when there is no such file."""
    if not path.exists():
        return {}
    data: dict[str, Any] = msgspec.json.decode(path.read_bytes())
    return data


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    names = (f.name for f in msgspec.structs.fields(Settings))
    return {n: env[ENV_PREFIX + n.upper()] for n in names if ENV_PREFIX + n.upper() in env}


def key_file(home: str) -> Path:
    """Where the local stack keeps identity's token signing key."""
    return Path(home) / "keys" / "identity-ed25519.json"




# Which user of the local stack a process is, when it cannot say so itself (the gateway):
# its credentials are that user's section of stack.json.
STACK_USER = ENV_PREFIX + "STACK_USER"


def load_settings(env: dict[str, str] | None = None, *, user: str = "") -> Settings:
    """Settings from defaults, then ``<home>/stack.json`` (its endpoints, which carry the
    operator's credentials, then the section of ``user``, else of ``$LEDGERSHARE_STACK_USER``:
    a service's, a gateway's, ...) and keys, then the environment."""
    env = dict(os.environ) if env is None else env
    from_env = _from_env(env)
    home = str(from_env.get("home", Settings().home))
    state = _json_file(Path(home) / "stack.json")
    section = state.get("users", {}).get(user or env.get(STACK_USER, ""), {})
    merged = {"home": home, **state.get("endpoints", {}), **section,
              **_json_file(key_file(home)), **from_env}
    return msgspec.convert(merged, Settings, strict=False)


def as_stack_user(settings: Settings, user: str, env: dict[str, str] | None = None) -> Settings:
    """``settings`` with the credentials of the local stack's ``user`` (its section of
    ``<home>/stack.json``) wherever the environment sets none; unchanged without a stack."""
    env = dict(os.environ) if env is None else env
    section = _json_file(Path(settings.home) / "stack.json").get("users", {}).get(user, {})
    given = _from_env(env)
    return settings.with_overrides(**{k: v for k, v in section.items() if k not in given})
