"""Where the lake is: a folder, or a URI on object storage with its storage options.

`LAKE_URI` (or `LAKE_DIR`, which takes the same values) is one of
- a plain path or `file:///abs/path`: a folder on this machine (the default,
  `data/lake`);
- `s3://bucket/prefix` (`s3a://` too): Amazon S3 or an S3-compatible server; the
  options are the environment's `AWS_*` variables (endpoint, region, credentials,
  path style, plain HTTP), passed to delta-rs as its storage options. Commits from
  several writers are safe through S3's conditional writes (`If-None-Match`), which
  this module asks for (`AWS_CONDITIONAL_PUT=etag`) unless the environment chose a
  locking provider (`AWS_S3_LOCKING_PROVIDER=dynamodb`) or set it itself;
- `gs://bucket/prefix` (`GOOGLE_*` variables) and `az://container/prefix`,
  `abfs[s]://...` (`AZURE_*` variables): passed to delta-rs the same way.

The options carry secrets: `LakeLocation.target` (the URI, any user info masked) is
what logs, `/api/stats` and errors show, and `redact` removes the secret values from
an error text that quotes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.errors import ConfigError

# scheme -> the prefixes of the environment variables that configure it
SCHEMES = {
    "s3": ("AWS_",),
    "s3a": ("AWS_",),
    "gs": ("GOOGLE_",),
    "az": ("AZURE_",),
    "abfs": ("AZURE_",),
    "abfss": ("AZURE_",),
}
# variables of those prefixes that configure a client of the SDKs but not delta-rs:
# left out (e.g. a CA bundle path set for the AWS CLI)
_NOT_OPTIONS = frozenset({"AWS_CA_BUNDLE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"})
# option names that hold secrets (a part of the name, upper case)
_SECRET_PARTS = ("SECRET", "TOKEN", "PASSWORD", "ACCOUNT_KEY", "SAS_KEY", "SERVICE_ACCOUNT_KEY")
_S3_COMMIT_SAFETY = ("AWS_CONDITIONAL_PUT", "AWS_S3_LOCKING_PROVIDER", "AWS_S3_ALLOW_UNSAFE_RENAME")


def is_secret(option: str) -> bool:
    name = option.upper()
    return any(part in name for part in _SECRET_PARTS)


@dataclass(frozen=True)
class LakeLocation:
    uri: str  # what delta-rs opens: an absolute path, or the object-store URI
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def local(self) -> bool:
        return "://" not in self.uri

    @property
    def target(self) -> str:
        """The location for logs and /api/stats: no secret in it."""
        if self.local:
            return self.uri
        parts = urlsplit(self.uri)
        if parts.password is not None or parts.username is not None:
            host = parts.hostname or ""
            return parts._replace(netloc=f"***@{host}").geturl()
        return self.uri

    def secrets(self) -> tuple[str, ...]:
        found = [v for k, v in self.storage_options.items() if v and is_secret(k)]
        parts = urlsplit(self.uri)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        return tuple(dict.fromkeys(found))

    def redact(self, text: str) -> str:
        """`text` with every secret of the options (and of the URI) as ***."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        shown = {k: ("***" if is_secret(k) else v) for k, v in self.storage_options.items()}
        return f"LakeLocation({self.target!r}, storage_options={shown!r})"


def resolve(location: str, environ: Mapping[str, str]) -> LakeLocation:
    """The lake at `location` (LAKE_URI or LAKE_DIR), options from `environ`."""
    text = location.strip()
    if not text:
        raise ConfigError("LAKE_URI/LAKE_DIR is empty")
    if "://" not in text:
        return LakeLocation(str(Path(text).absolute()))
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        path = unquote(urlsplit(text).path)
        if not path:
            raise ConfigError(f"LAKE_URI={text!r}: a file:// URI needs a path")
        return LakeLocation(str(Path(path).absolute()))
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in ("file", *SCHEMES))
        raise ConfigError(f"LAKE_URI={text!r}: unknown scheme {scheme!r} (one of {known})")
    if not urlsplit(text).netloc:
        raise ConfigError(f"LAKE_URI={text!r} names no bucket or container")
    prefixes = SCHEMES[scheme]
    options = {
        name: value
        for name, value in environ.items()
        if name.startswith(prefixes) and name not in _NOT_OPTIONS and value != ""
    }
    if prefixes == ("AWS_",) and not any(name in options for name in _S3_COMMIT_SAFETY):
        # S3 (since 2024) and S3-compatible servers that implement conditional writes:
        # a Delta commit is a put-if-absent of the next log entry, so concurrent
        # writers need no lock table
        options["AWS_CONDITIONAL_PUT"] = "etag"
    return LakeLocation(text.rstrip("/"), options)
