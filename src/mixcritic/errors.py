"""The project's exception types. The CLI turns them into one-line ``Error: ...`` messages."""


class MixcriticError(Exception):
    """A problem the user can act on. The message names the file or option and the fix."""

    exit_code = 1


class AudioError(MixcriticError):
    """An audio file or signal that cannot be used (unreadable, empty, NaN/Inf, too short)."""


class SilentAudioError(AudioError):
    """A signal with no measurable loudness (digital silence, or gated out entirely)."""


class DatasetError(MixcriticError):
    """A dataset folder or manifest that is missing, incomplete or inconsistent."""


class ModelError(MixcriticError):
    """A model, checkpoint or configuration that cannot be loaded or is unsupported."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what to type to continue (the CLI prints it instead of the generic hint)."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint
