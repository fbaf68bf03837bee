"""The vLLM options `serve.extra_args` may carry: an allowlist, not a denylist.

Extra arguments come after the target's own and argparse keeps the last value, so an option
outside the list could serve other weights (`--model`, `--lora-modules`, a positional), load
code into the server (`--tool-parser-plugin`, `--middleware`, `--worker-cls`, any
`*-plugin`, `--trust-remote-code`), read a file that sets any of them (`--config`), or undo
a decision the target makes (`--host`, `--api-key`). vLLM grows options every release; one
the list does not know is refused until someone reads what it does.
"""

from __future__ import annotations

import re

# Options that tune the engine and the API server and name no weights, file, address or
# code: the scheduler and batch, the KV cache, compilation, logging and metrics, API
# details, and the built-in tool and reasoning parsers (a name vLLM ships, not a module).
VLLM_FLAGS = frozenset({  # take no value
    "--enable-chunked-prefill", "--no-enable-chunked-prefill",
    "--enable-prefix-caching", "--no-enable-prefix-caching",
    "--async-scheduling", "--no-async-scheduling",
    "--disable-log-stats", "--disable-uvicorn-access-log", "--disable-fastapi-docs",
    "--kv-cache-metrics", "--enable-prompt-tokens-details", "--enable-server-load-tracking",
    "--enable-force-include-usage", "--return-tokens-as-token-ids",
    "--enable-auto-tool-choice", "--fully-sharded-loras",
    "--no-trust-remote-code",
})
VLLM_VALUED = frozenset({  # take one value, as the next argument or after `=`
    "--max-num-batched-tokens", "--long-prefill-token-threshold", "--max-num-queued-reqs",
    "--scheduling-policy", "--kv-cache-dtype", "--optimization-level", "--seed",
    "--max-logprobs", "--max-log-len", "--uvicorn-log-level", "--response-role",
    "--tool-call-parser", "--reasoning-parser", "--chat-template-content-format",
    "--sse-keep-alive-interval", "--max-cpu-loras", "--lora-dtype",
})
ALLOWED_VLLM_ARGS = VLLM_FLAGS | VLLM_VALUED

_LOADS_CODE = "it loads Python code into the server"
_OWN_KEY = "serve.{} (or models.<name>.{}) sets it; use that key"
# Why the options a user most likely reaches for are refused, and what to do instead.
REFUSED_VLLM_ARGS = {
    "--trust-remote-code": "it runs Python from the model's repository inside the server "
    "(serve a model whose architecture vLLM supports as it is)",
    "--host": "the target chooses the address (127.0.0.1 locally; on Kubernetes the pod's "
    "port, behind its NetworkPolicy); reach the server through the target's endpoint",
    "--port": "the target chooses the port; reach the server through the target's endpoint",
    "--config": "a vLLM config file can set any option; put allowed options in extra_args",
    "--api-key": "a key in YAML ends up in git; the server gets its key from VLLM_API_KEY "
    "(a Secret on Kubernetes)",
    "--model": "the target serves the registered version's weights",
    "--served-model-name": "the target serves each model under its own name",
    "--tokenizer": "the target serves the registered version's tokenizer",
    "--lora-modules": "the target serves the registered version's adapter",
    "--middleware": "the target's API-key guard is the server's middleware, and more "
    "middleware is code loaded into it",
    "--tool-parser-plugin": _LOADS_CODE, "--reasoning-parser-plugin": _LOADS_CODE,
    "--io-processor-plugin": _LOADS_CODE, "--logits-processors": _LOADS_CODE,
    "--worker-cls": _LOADS_CODE, "--worker-extension-cls": _LOADS_CODE,
    "--scheduler-cls": _LOADS_CODE,
    "--chat-template": "it reads a template file in place of the one the model was "
    "evaluated with",
    "--generation-config": "it reads sampling defaults from a folder in place of the "
    "model's",
    "--dtype": _OWN_KEY.format("dtype", "dtype"),
    "--quantization": _OWN_KEY.format("quantization", "quantization"),
    "--max-model-len": _OWN_KEY.format("max_model_len", "max_model_len"),
    "--max-num-seqs": _OWN_KEY.format("max_num_seqs", "max_num_seqs"),
    "--block-size": _OWN_KEY.format("block_size", "block_size"),
    "--stream-interval": _OWN_KEY.format("stream_interval", "stream_interval"),
    "--enforce-eager": _OWN_KEY.format("enforce_eager", "enforce_eager"),
    "--enable-lora": "serve.serve: lora serves the adapter as a LoRA module; use that key",
}
NOT_ALLOWED = ("extra_args may set only the options that tune the engine and server, spelled "
               "in full (see serve.extra_args in docs/configuration.md): "
               + ", ".join(sorted(ALLOWED_VLLM_ARGS)))
POSITIONAL = ("vLLM reads an argument with no option before it as the model to serve; the "
              "target serves the registered version")
# argparse takes these as values, not options.
_NEGATIVE_NUMBER = re.compile(r"-\d+")


def vllm_option(arg: str) -> str:
    """The option `arg` names as vLLM's parser reads it: `--opt=value` is --opt, and `_`
    is read as `-`."""
    return arg.split("=", 1)[0].replace("_", "-")


def extra_args_problem(args: list[str]) -> tuple[int, str] | None:
    """(index, why) of the first argument vLLM would read as something other than an
    allowed option or its value, else None. Only full names match: argparse would take an
    abbreviation as whichever option it prefixes, allowed or not."""
    value_due = False
    for i, arg in enumerate(args):
        is_option = arg.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(arg)
        if value_due and not is_option:
            value_due = False
            continue
        if not is_option:
            return i, POSITIONAL
        option = vllm_option(arg)
        if option not in ALLOWED_VLLM_ARGS:
            return i, REFUSED_VLLM_ARGS.get(option, NOT_ALLOWED)
        value_due = option in VLLM_VALUED and "=" not in arg
    # Its value would be the next of the target's own arguments.
    return (len(args) - 1, "it takes a value: give it next, or as --option=value") \
        if value_due else None


def check_extra_args(args: list[str], where: str) -> None:
    """ValueError naming `where[i]`, the argument, why and what to do, for the first
    argument extra_args may not carry."""
    found = extra_args_problem(args)
    if found is not None:
        i, why = found
        named = "" if why == POSITIONAL else f" ({vllm_option(args[i])})"
        raise ValueError(f"{where}[{i}]: {args[i]!r}{named} is refused: {why}")
