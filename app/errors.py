"""The exception tree: everything the pipeline raises on purpose is a PipelineError."""


class PipelineError(Exception):
    """Root of the pipeline's own errors."""


class ConfigError(PipelineError):
    """A setting is missing or malformed; the message names it."""


class BadEvent(PipelineError):
    """An input record breaks docs/contract.md, Input; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Fenced(PipelineError):
    """Another worker opened this partition's transactional id: it owns the partition now,
    and nothing of this worker's open transaction will become visible."""


class CommitFailed(PipelineError):
    """A partition's commit did not go through. `unknown`: it failed at the last step and
    may be visible or not; either way the caller reopens the partition (app/commit/)."""

    def __init__(self, message: str, *, unknown: bool, too_large: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown
        # the broker refused a record as too large: a data error, not an outage
        self.too_large = too_large
