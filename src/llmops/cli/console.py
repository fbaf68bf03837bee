"""The CLI's standard-error console (a module of its own: importing it loads no engine)."""

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
