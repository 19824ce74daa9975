"""Worker errors; every one derives from WorkerError."""

from jobs.errors import AdvisorError


class WorkerError(AdvisorError):
    """Root of the worker's own errors."""


class ModelLoadFailed(WorkerError):
    """The base model or its adapter could not be loaded; the worker refuses to start."""


class AdapterInvalid(ModelLoadFailed):
    """The adapter is missing, malformed, or does not change the model it claims to adapt."""


class InvalidOutput(WorkerError):
    """The model's output is truncated or does not validate against the Analysis schema."""


class GenerationTimeout(WorkerError):
    """Generation hit the soft time limit; partial output is kept on the job."""

    def __init__(self, message: str, partial: str, output_tokens: int) -> None:
        super().__init__(message)
        self.partial = partial
        self.output_tokens = output_tokens


class GenerationCancelled(GenerationTimeout):
    """The job was cancelled while generating; partial output is kept on the job."""


class DatabaseUnavailable(WorkerError):
    """The database stayed unreachable past the retry deadline; the job's lease will expire."""
