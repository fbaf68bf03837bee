"""The operator's YAML files as typed models: validation/, deploy/, registry/.

One model has one name, the key in every folder. The Axolotl YAML stays Axolotl's: we read
the few keys the pipeline needs (base model, datasets, sequence length) and let Axolotl's
own schema validate the rest when it trains.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from llmops.config.scaling import AutoscalingSettings, CanarySettings, TerminationSettings
from llmops.config.signing import SigningSettings
from llmops.config.strict import Strict as Strict  # the base of the models below
from llmops.config.vllm_args import ALLOWED_VLLM_ARGS, check_extra_args
from llmops.redact import PIPELINE_SECRETS

# --- validation/<model>.yml -------------------------------------------------------------


class DataChecks(Strict):
    """Thresholds for the data gate that runs before any training."""

    allowed_roles: list[str] = Field(
        default=["system", "user", "assistant"], description="Roles a message may have."
    )
    max_over_length_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Largest share of examples longer than sequence_len (Axolotl drops them).",
    )
    min_examples: int = Field(default=1, ge=1, description="Fewest examples a dataset may have.")
    allow_consecutive_same_role: bool = Field(
        default=False, description="Allow two turns of one role in a row.")
    max_duplicate_share: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Largest share of exact duplicates (after folding case and space).")
    pii_kinds: list[Literal["email", "phone", "card", "cloud_key", "private_key", "api_token"]] = \
        Field(default=["email", "phone", "card", "cloud_key", "private_key", "api_token"],
              description="PII and secret kinds that fail the gate; [] turns the check off.")
    pii_allow: list[str] = Field(
        default_factory=list, description="Regexes of matches that are fine (fullmatch).")
    max_line_bytes: int = Field(
        default=8 << 20, ge=1024, description="Longest JSONL line (or .json array element) "
        "the gate reads; a longer one fails `parse` on its line, so memory stays bounded.")


class GoldenSet(Strict):
    """Questions whose answers the base model cannot know; scored on generated answers."""

    path: str = Field(description="JSONL of {'question', 'answer'} rows, relative to the repo.")
    match: Literal["contains", "exact"] = Field(
        default="contains", description="How an answer is scored against the expected one."
    )


class RetentionSettings(Strict):
    """Kept capabilities: prompts the base model answers correctly, asked of every role;
    their share answered correctly is the retention_kept metric."""

    path: str = Field(description="The retention set (JSONL, relative to the repo), written "
                      "by `llmops build-retention <model>` with its provenance beside it "
                      "(<name>.provenance.json).")
    pool: str = Field(default="validation/retention/pool.jsonl", description="The candidate "
                      "pool `llmops build-retention` asks the base model (rows {id, "
                      "category, question, answer, match}); what it answers right is kept.")
    max_new_tokens: int = Field(default=32, ge=1, le=1024,
                                description="Longest generated answer, in tokens.")


class LmEvalSettings(Strict):
    """lm-evaluation-harness tasks run against the evaluation server's endpoint (model type
    local-chat-completions) for every role; the metrics are lmeval.<task>.<metric>."""

    tasks: list[str] = Field(min_length=1, description="Task names defined in include_path "
                             "(generate_until tasks over local files: nothing is downloaded).")
    include_path: str = Field(default="validation/lm_eval", description="Folder of the task "
                              "YAMLs (relative to the repo).")
    limit: int | None = Field(default=None, ge=1, description="Documents per task; null: all.")
    max_gen_toks: int = Field(default=32, ge=1, le=1024,
                              description="Longest generated answer, in tokens, unless the "
                              "task's generation_kwargs say otherwise.")


class EvalSettings(Strict):
    """What the evaluate stage measures."""

    golden: list[GoldenSet] = Field(
        min_length=1, description="The golden sets the candidate, the base and production "
        "answer (through vLLM); their scores are the golden_* metrics.")
    max_new_tokens: int = Field(default=48, ge=1, le=4096,
                                description="Longest generated answer, in tokens.")
    retention: RetentionSettings | None = Field(
        default=None, description="Kept capabilities (catastrophic forgetting): the "
        "retention set every role answers; metric retention_kept. null: not measured.")
    lm_eval: LmEvalSettings | None = Field(
        default=None, description="lm-evaluation-harness tasks against the served roles; "
        "metrics lmeval.<task>.<metric>. null: none.")
    adapter_suites: bool = Field(
        default=False, description="Ask the candidate's adapter (candidate_adapter, measured "
        "beside a candidate served as merged or int8 weights; not gated) every evaluation "
        "suite (retention, lm_eval, probes) too; false: the golden set only.")


class GateRule(Strict):
    """One release rule on one metric; every condition given must hold."""

    metric: str = Field(description="eval_loss, eval_perplexity, golden_accuracy, "
                        "golden.<set>.accuracy, golden.<set>.rouge_l, format_empty_rate, "
                        "format_template_leak_rate, format_truncated_rate, latency_p50_s, "
                        "latency_p95_s; a name with loss, perplexity, latency, error or "
                        "format_ is better lower.")
    min: float | None = Field(default=None, description="Candidate value at least this.")
    max: float | None = Field(default=None, description="Candidate value at most this.")
    min_gain_over_base: float | None = Field(
        default=None, description="Better than the base model by at least this margin."
    )
    max_regression_vs_production: float | None = Field(
        default=None, ge=0.0, description="Worse than production by at most this."
    )
    min_gain_over_base_lower_bound: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="The lower bound of the 95% interval of candidate − base, paired on the "
        "same golden questions (Newcombe's score interval), at least this: a gain that is "
        "not noise. Accuracy metrics only (golden_accuracy, golden.<set>.accuracy); fails "
        "closed without per-question verdicts.")
    min_gain_over_production_lower_bound: float | None = Field(
        default=None, ge=-1.0, le=1.0,
        description="As min_gain_over_base_lower_bound, against production (e.g. -0.05: "
        "production may be better by at most 0.05, with 95% confidence); skipped before the "
        "first production version.")

    @model_validator(mode="after")
    def _has_a_condition(self) -> GateRule:
        bounds = (self.min_gain_over_base_lower_bound, self.min_gain_over_production_lower_bound)
        conditions = (self.min, self.max, self.min_gain_over_base,
                      self.max_regression_vs_production, *bounds)
        if all(c is None for c in conditions):
            raise ValueError(
                "a gate rule needs min, max, min_gain_over_base, max_regression_vs_production, "
                "min_gain_over_base_lower_bound or min_gain_over_production_lower_bound"
            )
        if any(c is not None and not math.isfinite(c) for c in conditions):
            raise ValueError("gate thresholds must be finite numbers")
        per_question = re.fullmatch(r"golden_accuracy|golden\..+\.accuracy", self.metric)
        if any(b is not None for b in bounds) and not per_question:
            raise ValueError(
                f"{self.metric}: interval lower bounds apply to golden_accuracy and "
                "golden.<set>.accuracy only (the metrics with per-question verdicts)")
        return self


class RegurgitationProbe(Strict):
    """Prompts that would elicit training text: each sampled training example's own prompt
    (and a 'Continue this text:' prompt with its answer's first words); an answer that
    repeats a long verbatim span of any training answer fails."""

    samples: int = Field(
        default=24, ge=0, description="Training examples prompted (deterministic: those "
        "whose answers are long enough to exceed max_verbatim_tokens first, then evenly "
        "spaced over the rest); 0: no regurgitation prompts.")
    continuation_words: int = Field(
        default=8, ge=0, description="Words of a sampled answer given in a 'Continue this "
        "text:' prompt (only answers longer than this); 0: no continuation prompts.")
    max_verbatim_tokens: int = Field(
        default=30, ge=2, description="An answer sharing this many consecutive whitespace "
        "tokens (case and punctuation folded) with any training answer is a regurgitation "
        "failure. 30 words is about two sentences: more than a short fact an FAQ answer "
        "legitimately repeats. Keep it above the answers a model is meant to reproduce "
        "word for word.")

    @model_validator(mode="after")
    def _prefix_below_limit(self) -> RegurgitationProbe:
        if self.continuation_words >= self.max_verbatim_tokens:
            raise ValueError("continuation_words must be below max_verbatim_tokens (an answer "
                             "that echoes its prompt must not fail by the echo alone)")
        return self


class ProbeSettings(Strict):
    """Safety probes asked of base, candidate and production in every evaluation
    (llmops.evaluation.probes): regurgitation of training text, prompt injections and
    requests to decline; every answer is scanned with the data gate's PII and secret
    scanners (data.pii_kinds, data.pii_allow). Metrics per role, for gate rules:
    probe.regurgitation_failures, probe.pii_findings, probe.secret_findings,
    probe.injection_failures, probe.refusal_failures (counts, better lower)."""

    path: str | None = Field(
        default=None, description="YAML of injection and refusal probes (system prompt, "
        "user message, rules on the answer), relative to the repository, e.g. "
        "validation/probes/<model>.yml; null: regurgitation and scanning only.")
    regurgitation: RegurgitationProbe = Field(
        default=RegurgitationProbe(), description="The regurgitation probe.")
    max_new_tokens: int = Field(default=64, ge=1, le=4096,
                                description="Longest generated probe answer, in tokens.")


class ValidationConfig(Strict):
    """validation/<model>.yml: data expectations, evaluation sets and release gates."""

    data: DataChecks = Field(default=DataChecks(), description="The data gate's thresholds.")
    eval: EvalSettings = Field(description="What evaluation measures.")
    probes: ProbeSettings | None = Field(
        default=None, description="Safety probes (regurgitation, injection, refusal, PII and "
        "secrets in answers) asked of every role; null: none.")
    gates: list[GateRule] = Field(
        min_length=1, description="The release gate: every rule must hold, else nothing is "
        "registered.")
    allow_trust_remote_code: bool = Field(
        default=False, description="Let the Axolotl YAML set `trust_remote_code: true`, which "
        "runs Python code from the model's repository when it trains and serves.")


# --- deploy/<env>.yml ---------------------------------------------------------------------

# vLLM closes an idle keep-alive connection after 5 s by default, the same as httpx's pool
# expiry: a client reusing it just then gets a reset. Servers keep connections longer than
# clients and than load balancers' idle timeouts (60 s for AWS ALB and nginx upstreams).
HTTP_KEEP_ALIVE_S = 75


class ServingChoice(NamedTuple):
    """What the machine's compute plan (`llmops.compute`) serves with where a file says
    `auto`: vLLM's --dtype and the artefact (merged weights, or int8)."""

    dtype: str  # bfloat16 or float32
    quantization: str  # none or w8a8-int8
    kvcache_gib: int = 1


class ServeSettings(Strict):
    """How vLLM serves one model on a local CPU target."""

    serve: Literal["lora", "merged"] = Field(
        default="merged", description="The adapter merged into the weights (much faster on "
        "CPU), or as a LoRA module on the base.")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto", description="--dtype of the served weights; auto: the machine's "
        "compute plan (bfloat16 where the CPU multiplies it in hardware, else float32).")
    max_model_len: int = Field(default=1024, ge=16, description="--max-model-len: longest "
                               "prompt and answer, in tokens.")
    max_num_seqs: int = Field(default=64, ge=1, description="--max-num-seqs: sequences "
                              "decoded together.")
    kvcache_space_gib: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="VLLM_CPU_KVCACHE_SPACE, GiB; auto: the machine's compute "
        "plan (a sixteenth of its memory, 1 to 4 GiB).")
    enforce_eager: bool = Field(
        default=False, description="Skip torch.compile: a faster first start, a slower decode "
        "(later starts read the compile cache in ~/.cache/llmops/vllm).")
    block_size: int = Field(
        default=32, ge=32, multiple_of=32, description="Tokens per KV-cache block (vLLM's "
        "CPU attention takes multiples of 32; its default is 128). Short chats waste less "
        "of a small block.")
    stream_interval: int = Field(
        default=1, ge=1, description="--stream-interval: a stream sends its first token at "
        "once, then every N tokens. Fewer chunks leave more of a small CPU to the model.")
    cpu_threads_bind: str = Field(
        default="all", description="VLLM_CPU_OMP_THREADS_BIND: 'all' binds every core this "
        "process may use (vLLM's 'auto' leaves one for the API server, a large share of a "
        "small machine), 'auto', or a core list such as '0-3'.")
    preload_iomp: bool = Field(default=True, description="LD_PRELOAD the serving env's Intel "
                               "OpenMP, as vLLM's CPU guide advises.")
    preload_tcmalloc: bool = Field(default=True, description="LD_PRELOAD TCMalloc (Debian's "
                                   "libtcmalloc-minimal4), as vLLM's CPU guide advises.")
    quantization: Literal["auto", "none", "w8a8-int8"] = Field(
        default="auto", description="w8a8-int8: serve the merged model with int8 decoder "
        "weights (one scale per output channel) and activations quantized per token at run "
        "time (llmops.models.quantize); needs serve: merged. auto: the machine's compute "
        "plan (int8 where the CPU multiplies int8 and bf16 in hardware, else none; none "
        "for serve: lora).")
    startup_timeout_s: float = Field(default=600.0, gt=0, description="Seconds a new "
                                     "server may take to answer its health check.")
    address: str = Field(
        default="127.0.0.1:8000", pattern=r"^[^\s:/]+:[0-9]{1,5}$", description="host:port "
        "of the model's stable address: the vLLM router in front of its workers, the same "
        "across deploys and rollbacks (each model its own: set it under models.<name>). "
        "Port 0: a free port chosen when the router starts, kept while it runs.")
    drain_timeout_s: float = Field(
        default=60.0, ge=0, description="Seconds a replaced worker may take to finish its "
        "in-flight requests after the router stops sending it new ones.")
    extra_args: list[str] = Field(
        default_factory=list, description="More vLLM CLI options, each followed by its value "
        "if it takes one. Only options that tune the engine and server (none that names "
        "weights or files, loads code, or overrides the target's own arguments), spelled in "
        "full: " + ", ".join(sorted(ALLOWED_VLLM_ARGS)) + ".")

    @field_validator("extra_args")
    @classmethod
    def _no_refused_args(cls, args: list[str]) -> list[str]:
        check_extra_args(args, "extra_args")
        return args

    @model_validator(mode="after")
    def _quantize_merged_only(self) -> ServeSettings:
        if self.quantization not in ("none", "auto") and self.serve != "merged":
            raise ValueError(f"quantization: {self.quantization} needs serve: merged (a LoRA "
                             "adapter is served on its bf16 base)")
        return self


class LoadSettings(Strict):
    """The bounded load test run after the smoke test, and what it must achieve."""

    concurrency: int = Field(default=64, ge=1, description="Concurrent streaming clients.")
    duration_s: float = Field(default=20.0, gt=0, description="Clients keep sending this long.")
    min_requests: int = Field(default=64, ge=1, description="Sent at least, however long.")
    max_tokens: int = Field(default=32, ge=1, description="Generated per request (ignore_eos).")
    max_error_rate: float = Field(default=0.0, ge=0, le=1,
                                  description="Largest share of failed requests.")
    max_p99_latency_s: float | None = Field(
        default=None, gt=0, description="Slowest 99th-percentile request time; null: any.")
    min_tokens_per_s: float | None = Field(
        default=None, gt=0, description="Fewest generated tokens per second, all clients "
        "together; null: any.")


class VerifySettings(Strict):
    """The checks run against every new deployment before it replaces the previous one."""

    golden_prompts: int = Field(default=1, ge=1, description="Golden questions asked.")
    min_golden_accuracy: Annotated[float, Field(ge=0, le=1)] | Literal["gate"] | None = Field(
        default=None, description="Share of those questions the deployment must answer right: "
        "a number, or 'gate' for the golden_accuracy minimum of the model's own gate "
        "(validation/<model>.yml); null: not checked. Evaluation gates the artefact the "
        "target serves (adapter, merged, int8); this checks it again as deployed.")
    request_timeout_s: float = Field(default=120.0, gt=0,
                                     description="Longest wait for one answer.")
    load: LoadSettings | None = Field(default_factory=LoadSettings,
                                      description="null: no load test.")


class GpuTarget(Strict):
    """A Kubernetes GPU target: what the parallelism planner and the manifests need."""

    gpu_type: str = Field(description="e.g. nvidia-a100-80gb (a node selector value).")
    gpu_memory_gib: float = Field(gt=0, description="Memory of one GPU.")
    gpus_per_node: int = Field(ge=1, description="GPUs of one pod (tensor parallel).")
    nodes: int = Field(default=1, ge=1, description="Pods of one server (pipeline parallel).")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="--dtype of the served weights.")
    quantization: Literal["fp8", "awq", "gptq"] | None = Field(
        default=None, description="vLLM's --quantization; null: none.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="Share of "
                                          "each GPU's memory vLLM may use.")
    max_model_len: int = Field(default=8192, ge=16, description="--max-model-len: longest "
                               "prompt and answer, in tokens.")
    max_num_seqs: int = Field(default=16, ge=1, description="--max-num-seqs: sequences "
                              "decoded together (with max_model_len, sizes the KV cache).")
    serve: Literal["lora", "merged"] = Field(
        default="lora", description="Serve the adapter on its base, or the merged model.")


IMAGE_BY_DIGEST = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Production's vLLM: the release requirements/serve.lock pins (llmops.serve.vllm_release
# checks they agree). The digest is a placeholder (vllm_release.DIGEST_PLACEHOLDER) until the
# platform team pins the real one: `docker buildx imagetools inspect vllm/vllm-openai:v0.32.0`.
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0@sha256:" + "0" * 64
# The CI's pipeline image (docker/pipeline.Dockerfile) in the project's registry: a fork
# pins its own by digest (`bash scripts/image-tag.sh --pin` prints it).
FETCH_IMAGE = "registry.gitlab.example.com/group/llmops/pipeline@sha256:" + "0" * 64


class NetworkPeer(Strict):
    """Pods the NetworkPolicy admits to the vLLM port: label selectors (matchLabels); both
    given: those pods in those namespaces; pod labels alone: in the serving namespace."""

    namespace_labels: dict[str, str] | None = Field(
        default=None, description="e.g. {kubernetes.io/metadata.name: monitoring}.")
    pod_labels: dict[str, str] | None = Field(
        default=None, description="e.g. {app.kubernetes.io/name: gateway}.")

    @model_validator(mode="after")
    def _selects_something(self) -> NetworkPeer:
        if self.namespace_labels is None and self.pod_labels is None:
            raise ValueError("give namespace_labels, pod_labels or both (a peer with neither "
                             "would not say whom to admit)")
        return self


class KubernetesSettings(Strict):
    """deploy/<env>.yml `kubernetes:`: images, Secrets, who may connect, pod resources."""

    vllm_image: str | None = Field(
        default=VLLM_IMAGE, description="vLLM's OpenAI server image, pinned by digest "
        "(name@sha256:…): the release requirements/serve.lock pins, the vLLM that evaluates "
        "(one engine version: `llmops check-config` refuses another; a deploy refuses the "
        "placeholder digest sha256:000…, which check-config notes).")
    fetch_image: str = Field(
        default=FETCH_IMAGE, description="The init container's image (name@sha256:…), which "
        "fetches the version and verifies its files and signature: Python with "
        "model-signing, i.e. the CI's pipeline image by digest ($CI_REGISTRY_IMAGE/pipeline"
        "@$LLMOPS_PIPELINE_IMAGE_DIGEST). A deploy refuses the placeholder digest "
        "sha256:000…, which `llmops check-config` notes.")
    fetch_python: str = Field(
        default="/opt/llmops/.venv/bin/python", min_length=1, description="The Python of "
        "fetch_image that has model-signing (the pipeline image's environment).")
    api_key_secret: str | None = Field(
        default=None, description="Secret whose key `api-key` is the server's API key "
        "(VLLM_API_KEY); default: <model>-<env>-api-key. Created by the platform team.")
    registry_token_secret: str = Field(
        default="llmops-registry-read-token", description="Secret with a read-only registry "
        "token for the init container (GitLab: read_api scope, or a deploy token with "
        "read_package_registry), never the CI's write token.")
    registry_token_key: str = Field(default="token", description="Its key in that Secret.")
    run_as_user: int = Field(
        default=1000, ge=1, description="Non-root uid (and gid) the pod runs as: the vLLM "
        "image's default user is root.")
    clients: list[NetworkPeer] = Field(
        default_factory=lambda: [NetworkPeer(pod_labels={"llmops/serving-client": "true"})],
        min_length=1, description="Who may call the API (the Service's clients, e.g. the "
        "gateway's namespace); default: pods labelled llmops/serving-client=true in the "
        "serving namespace.")
    prometheus: NetworkPeer = Field(
        default_factory=lambda: NetworkPeer(
            namespace_labels={"kubernetes.io/metadata.name": "monitoring"},
            pod_labels={"app.kubernetes.io/name": "prometheus"}),
        description="Prometheus, admitted to the port that serves /metrics.")
    context: str | None = Field(
        default=None, description="The kubeconfig context of the cluster (kubectl "
        "--context); in GitLab CI the agent's, `<agent project path>:<agent name>`; "
        "default: the kubeconfig's current context.")
    namespace: str | None = Field(
        default=None, description="The namespace the model is served in (every object is "
        "rendered into it); default: the context's namespace.")
    env_passthrough: list[str] = Field(
        default_factory=list, description="More environment variables kubectl gets, for an "
        "exec credential plugin that needs them (e.g. VAULT_ADDR). kubectl otherwise gets "
        "only PATH, HOME, KUBECONFIG, locale, proxy, CA and TMPDIR variables and those of "
        "the AWS, Google Cloud and Azure auth plugins (AWS_*, CLOUDSDK_*, AZURE_*, AAD_*), "
        "never the pipeline's own tokens.")
    replicas: int = Field(default=1, ge=1, description="Pods serving the model; above one, "
                          "a PodDisruptionBudget keeps all but one through node drains. "
                          "With autoscaling, min_replicas and max_replicas instead.")
    autoscaling: AutoscalingSettings = Field(
        default_factory=AutoscalingSettings, description="Replicas that follow load (an HPA "
        "or a KEDA ScaledObject on vLLM's queue and KV-cache metrics); kind none: fixed.")
    canary: CanarySettings | None = Field(
        default=None, description="Roll a new version out as a canary beside the current one "
        "(steps of a share of the pods, judged on Prometheus metrics and the verify checks), "
        "rolled back by itself on a breach; none: the whole Deployment at once.")
    termination: TerminationSettings = Field(
        default_factory=TerminationSettings, description="How a pod stops with its "
        "in-flight streams finished (preStop, vLLM's drain, the grace period).")
    grafana_dashboard: bool = Field(
        default=True, description="Render the model's Grafana dashboard (throughput, TTFT, "
        "latency, queue, KV cache, traffic per version) as a ConfigMap labelled "
        "grafana_dashboard=1, which Grafana's dashboard sidecar (kube-prometheus-stack) "
        "loads; its JSON can also be imported by hand.")
    progress_deadline_s: int = Field(
        default=1800, ge=10, description="A rollout that makes no progress this long fails "
        "and is undone (the Deployment's progressDeadlineSeconds): long enough to fetch "
        "the weights and start vLLM.")
    cpu_per_gpu: float = Field(default=4, gt=0, description="CPU cores requested per GPU.")
    memory_gib_per_gpu: float = Field(
        default=32, gt=0, description="Memory requested and limited per GPU (host RAM for "
        "loading weights, /dev/shm).")

    @field_validator("env_passthrough")
    @classmethod
    def _not_the_pipelines_secrets(cls, names: list[str]) -> list[str]:
        for i, name in enumerate(names):
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"env_passthrough[{i}]: {name!r} is not a variable name")
            if name in PIPELINE_SECRETS:
                raise ValueError(f"env_passthrough[{i}]: {name} is the pipeline's own secret, "
                                 "which kubectl never gets: remove it (kubectl's credentials "
                                 "come from KUBECONFIG or a cloud's auth plugin)")
        return names

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> KubernetesSettings:
        # An applied replica count would reset the autoscaler's at every deploy.
        if self.autoscaling.kind != "none" and "replicas" in self.model_fields_set:
            raise ValueError(f"replicas and autoscaling (kind {self.autoscaling.kind}) are "
                             "both set: the autoscaler owns the count; remove replicas and "
                             "give autoscaling.min_replicas and max_replicas")
        return self

    @field_validator("vllm_image", "fetch_image")
    @classmethod
    def _by_digest(cls, image: str | None) -> str | None:
        if image is not None and not IMAGE_BY_DIGEST.fullmatch(image):
            raise ValueError(f"{image!r} is not pinned by digest: a tag can be moved to other "
                             "content. Give name@sha256:<64 hex digits> (`docker buildx "
                             "imagetools inspect <name>:<tag>` prints the digest)")
        return image


class CostSettings(Strict):
    """What one deployment on this target costs to run: the price of a device-hour, which
    with the load test's tokens/s of a verified deploy gives the cost per million generated
    tokens (recorded in the environment's history, shown by `llmops lineage`)."""

    price_per_device_hour: float | None = Field(
        default=None, gt=0, description="Price of one device for one hour, in `currency`: "
        "one GPU, or on a CPU target the whole machine (all its cores are one device); "
        "null: tokens/s is recorded, no cost.")
    currency: str = Field(default="USD", min_length=1, max_length=8,
                          description="The price's currency, as printed.")
    device: Literal["cpu", "gpu"] | None = Field(
        default=None, description="What serves: gpu, or cpu (one device is one machine); "
        "default: gpu on a target with a gpu section, else cpu.")
    devices: int | None = Field(
        default=None, ge=1, description="Devices one deployment holds; default: "
        "gpus_per_node × nodes × kubernetes.replicas (autoscaled: min_replicas) on a GPU "
        "target, else 1.")


def is_hub_id(base: str) -> bool:
    """`org/name` on the Hub, not a path (absolute, or relative to the repository)."""
    return base.count("/") == 1 and not base.startswith((".", "/", "~"))


class DeployConfig(Strict):
    """deploy/<env>.yml: one target environment."""

    target: str = Field(
        pattern=r"^[a-z][a-z0-9-]*$",
        description="The target kind. local: vLLM processes on 127.0.0.1; kubernetes: "
        "manifests applied with kubectl (further kinds: `register_target_kind`).")
    gpu: GpuTarget | None = Field(default=None, description="The GPUs of a kubernetes "
                                  "target (required there).")
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="A kubernetes target's images, "
        "Secrets, NetworkPolicy peers and pod resources.")
    registry_api: str | None = Field(
        default=None, description="GitLab project API the pods fetch model files from, "
        "e.g. https://gitlab.example.com/api/v4/projects/7 (default: $CI_API_V4_URL/projects/"
        "$CI_PROJECT_ID).")
    endpoint: str | None = Field(
        default=None, description="Kubernetes: the OpenAI-compatible URL (…/v1) of the "
        "Service or gateway in front of the pods, which `llmops verify` checks.")
    base_models: dict[str, str] = Field(
        default_factory=dict, description="Per model: the base model pods load for LoRA "
        "serving: a mounted path, or a Hub id pinned to a commit (`org/name@<revision>`), so "
        "that every pod serves the weights the adapter was trained on.")
    serve: ServeSettings = Field(default=ServeSettings(), description="How a local target "
                                 "serves every model.")
    verify: VerifySettings = Field(default=VerifySettings(), description="The checks of "
                                   "every new deployment before it serves.")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-model overrides of `serve` (any of its keys)."
    )
    cost: CostSettings = Field(
        default_factory=CostSettings, description="The price of a device-hour on this "
        "target, for the serving cost per million generated tokens.")
    signing: SigningSettings = Field(
        default_factory=SigningSettings, description="Whose signatures a deploy accepts "
        "(checked before anything is served).")

    @field_validator("base_models")
    @classmethod
    def _hub_bases_pinned(cls, bases: dict[str, str]) -> dict[str, str]:
        for model, base in bases.items():
            if is_hub_id(base.split("@", 1)[0]) and not base.partition("@")[2]:
                raise ValueError(
                    f"base_models.{model}: {base} is a Hub id without a revision; pin the "
                    f"commit ({base}@<revision>): a branch can change under running pods")
        return bases

    @field_validator("models")
    @classmethod
    def _no_refused_model_args(cls, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
        # The overrides are validated as a whole only when used (serve_for); refused vLLM
        # arguments are refused when the file loads, like those of `serve`.
        for name, overrides in models.items():
            args = overrides.get("extra_args") if isinstance(overrides, dict) else None
            if isinstance(args, list):
                check_extra_args([str(a) for a in args], f"models.{name}.extra_args")
        return models

    @model_validator(mode="after")
    def _gpu_for_kubernetes(self) -> DeployConfig:
        if self.target == "kubernetes" and self.gpu is None:
            raise ValueError("a kubernetes target needs a gpu section")
        return self

    def serving_devices(self) -> tuple[str, int]:
        """(device kind, count) of one deployment, as `cost` says or the target implies:
        the GPUs of every pod of a GPU target, else one CPU machine."""
        device = self.cost.device or ("gpu" if self.gpu is not None else "cpu")
        if self.cost.devices is not None:
            return device, self.cost.devices
        if self.gpu is not None and device == "gpu":
            scaling = self.kubernetes.autoscaling  # autoscaled: what serves at the least
            pods = self.kubernetes.replicas if scaling.kind == "none" else scaling.min_replicas
            return device, self.gpu.gpus_per_node * self.gpu.nodes * pods
        return device, 1

    def serve_for(self, model: str, plan: ServingChoice | None) -> ServeSettings:
        """`serve` with the model's overrides applied (validated like `serve`), and each
        `auto` decided by `plan` (the machine's compute plan). Without a plan, `auto` is left
        as is: enough to read the other keys, not to serve."""
        merged = {**self.serve.model_dump(), **self.models.get(model, {})}
        if plan is not None:
            if merged.get("dtype") == "auto":
                merged["dtype"] = plan.dtype
            if merged.get("kvcache_space_gib") == "auto":
                merged["kvcache_space_gib"] = plan.kvcache_gib
            if merged.get("quantization") == "auto":
                lora = merged.get("serve") == "lora"
                merged["quantization"] = "none" if lora else plan.quantization
        return ServeSettings.model_validate(merged)


# --- registry/<env>.yml -------------------------------------------------------------------


class Pin(Strict):
    """Which version of a model runs in an environment, and the digest of its manifest."""

    version: str = Field(description="SemVer of a registered version.")
    digest: str = Field(description="sha256 of the version's manifest, checked when it is "
                        "fetched.")


class RegistryPins(Strict):
    """registry/<env>.yml: changed by merge request only."""

    models: dict[str, Pin] = Field(default_factory=dict, description="Model name -> its pin.")


