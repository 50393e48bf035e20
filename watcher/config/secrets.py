"""Secrets in the config: inline, through `${ENV}`, or read from `<key>_file`.

Problems name the key and the file, never the value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from watcher.config.yamlsafe import KeyPath
from watcher.core.secret import Secret

MAX_SECRET_FILE_BYTES = 64 << 10


class SecretReader:
    """Reads the secrets of one config file and remembers which were written inline."""

    def __init__(
        self,
        report: Callable[[KeyPath, str], None],
        config_path: Path,
        credentials_dir: Path | None,
        mode: int,
        interpolated: Collection[KeyPath],
    ) -> None:
        self.report = report
        self.path = config_path
        self.credentials_dir = credentials_dir
        self.mode = mode
        # Keys whose value came from `${ENV}`: not written into the file itself.
        self.interpolated = interpolated
        self.inline_secrets: list[KeyPath] = []
        # Where a secret written inline should go instead, when not `<key>_file`.
        self.file_keys: dict[KeyPath, str] = {}

    def secret(
        self, at: KeyPath, key: str, inline: str | None, file: str | None, *, required: bool
    ) -> Secret | None:
        """The secret given as `key` (inline or `${ENV}`) or `<key>_file`; None if absent/bad."""
        file_key = f"{key}_file"
        if inline is not None and file is not None:
            self.report((*at, file_key), f"give either {key} or {file_key}, not both")
            return None
        if file is not None:
            value = self.read_secret_file((*at, file_key), file)
            return None if value is None else Secret(value)
        if inline is None:
            if required:
                self.report((*at, key), f"is required (or {file_key})")
            return None
        if not inline:
            self.report((*at, key), "must not be empty")
            return None
        if (*at, key) not in self.interpolated:
            self.inline_secrets.append((*at, key))
        return Secret(inline)

    def note_inline(self, at: KeyPath, file_key: str) -> None:
        """A secret was written inline at `at` (inside a larger value); `file_key` is the
        key that reads it from a file instead."""
        self.inline_secrets.append(at)
        self.file_keys[at] = file_key

    def read_secret_file(self, at: KeyPath, name: str) -> str | None:
        """The file's text minus one trailing newline; problems name the path, never content."""
        given = Path(name)
        candidates = [given] if given.is_absolute() else []
        if not candidates:
            if self.credentials_dir is not None:
                candidates.append(self.credentials_dir / given)
            candidates.append(self.relative_to_config(given))
        for candidate in candidates:
            try:
                with candidate.open("rb") as handle:
                    raw = handle.read(MAX_SECRET_FILE_BYTES + 1)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                self.report(at, f"cannot read secret file {candidate}: {reason}")
                return None
            return self.secret_text(at, candidate, raw)
        self.report(at, "secret file not found: " + " or ".join(str(c) for c in candidates))
        return None

    def secret_text(self, at: KeyPath, source: Path, raw: bytes) -> str | None:
        """The secret in `raw` read from `source`, or None after reporting why it is unusable."""
        if len(raw) > MAX_SECRET_FILE_BYTES:
            self.report(at, f"secret file {source} is larger than 64 KiB")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.report(at, f"secret file {source} is not UTF-8 text")
            return None
        text = text.removesuffix("\n")
        if not text:
            self.report(at, f"secret file {source} is empty")
            return None
        return text

    def relative_to_config(self, path: Path) -> Path:
        """`path` as given when absolute, else relative to the config file's folder."""
        return path if path.is_absolute() else self.path.parent / path

    def check_inline_secrets(self) -> None:
        """Refuse secrets written into a file that group or others can read."""
        if not self.mode & 0o077:
            return
        for at in self.inline_secrets:
            file_key = self.file_keys.get(at, f"{at[-1]}_file")
            self.report(
                at,
                "secret written inline in a file that group or others can read; "
                f"run 'chmod 600 {self.path}', or use ${{VAR}} or {file_key} instead",
            )
