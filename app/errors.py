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
