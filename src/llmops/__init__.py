"""llmops: release fine-tuned LLMs from a Git tag: validate, train, gate, register, deploy."""

__version__ = "0.1.0"
