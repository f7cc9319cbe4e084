"""Submit a sweep's training jobs, watch them, bring each home: a loop that fails safe.

Independent of how jobs are uploaded and brought home: it takes the planned jobs (a name
and a CreateTrainingJob request each), a boto3/botocore ``sagemaker`` client and two
callables, and returns an :class:`Outcome` per job.

It talks to SageMaker through the plain botocore client, not sagemaker-core's
``TrainingJob``: botocore's ``Stubber`` attaches to exactly that client, so the tests
script the answers moto cannot give (the real secondary states, MaxRuntimeExceeded,
throttling, ResourceLimitExceeded, StopTrainingJob, expired credentials), with botocore
validating every request and every scripted answer against the service model. It also
makes each call one API call: sagemaker-core's ``TrainingJob.create`` follows the create
with a describe, so a failure of that describe would leave a job created but unknown to
the loop, and its client is a process-wide singleton a test cannot stub.

What it guarantees:

- Up to ``max_parallel_jobs`` jobs in flight; every state change (TrainingJobStatus,
  SecondaryStatus and its StatusMessage) is printed on stderr as it is seen, and a Stopped
  or Failed job is reported with its reason (``MaxRuntimeExceeded: Training job runtime
  exceeded MaxRuntimeInSeconds provided``, FailureReason), never "Stopped: Stopped".
- Throttling and transient errors (botocore's own lists, "Rate exceeded", HTTP 429/5xx,
  connection errors) are retried with exponential backoff and jitter, a bounded number of
  times (:class:`Backoff`).
- On any exception (Ctrl-C included) the jobs it started that are still running are
  stopped (StopTrainingJob), and it prints which were stopped, which finished meanwhile,
  which could not be stopped with the exact ``aws sagemaker stop-training-job`` command,
  and which were never submitted; then the exception goes on.
- A job whose bring-home fails has finished on SageMaker: it is not stopped, it is
  reported as finished but not brought home, with the S3 location of its output, and the
  loop goes on watching the others (see ``_finish``).
- ResourceLimitExceeded on a create: the jobs already running keep running and are
  watched to the end; the rest are reported as not submitted (see ``_submit``).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

# TrainingJobStatus values of a job that has not ended yet; any other (Completed, Failed,
# Stopped, and whatever SageMaker adds) is final
RUNNING = ("InProgress", "Stopping")
SUBMITTED = "Submitted"  # wait=false: created, not watched
NOT_SUBMITTED = "NotSubmitted"  # never created (the create was refused, or the loop failed before)

# SecondaryStatus values that say why a job ended, with the setting that governs them
_LIMITS = {
    "MaxRuntimeExceeded": ("MaxRuntimeInSeconds", "hydra.launcher.max_run_seconds"),
    "MaxWaitTimeExceeded": ("MaxWaitTimeInSeconds", "hydra.launcher.max_wait_seconds"),
}


class Job(Protocol):
    """What the loop needs of a planned job (``_core.PlannedJob`` has both)."""

    @property
    def name(self) -> str: ...

    @property
    def request(self) -> Mapping[str, Any]: ...


J = TypeVar("J", bound=Job)
R = TypeVar("R")


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter for throttled and transient AWS errors.

    Retry ``n`` (from 0) waits a random time in ``[d/2, d]``, ``d = min(cap, first * 2**n)``
    ("equal jitter": the jobs of a sweep, polled together, spread out, and the wait still
    grows). After ``attempts`` retries the error is raised (and the loop fails safe).
    """

    first: float = 1.0
    cap: float = 30.0
    attempts: int = 8

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.first * 2**retry)
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Outcome(Generic[R]):
    """How one job of the sweep ended, as far as the loop knows."""

    name: str
    # SageMaker's TrainingJobStatus at the end (Completed, Failed, Stopped), or
    # SUBMITTED (wait=false) or NOT_SUBMITTED
    status: str
    # why it ended so (Stopped, Failed), or why it was not submitted; "" when Completed
    reason: str = ""
    description: dict[str, Any] | None = None  # the last DescribeTrainingJob answer
    result: R | None = None  # what bring_home returned
    home: bool = False  # bring_home returned
    error: BaseException | None = None  # why it was not submitted, or not brought home
    output: str | None = None  # where SageMaker put the job's output on S3


# ---- the request, in the API's names -------------------------------------------------------


def _normalize(name: str) -> str:
    # sagemaker-core's snake_case matched to the model's names without case or underscores:
    # s3_uri is S3Uri, volume_size_in_gb is VolumeSizeInGB (no two members of a shape collide)
    return name.replace("_", "").lower()


def api_request(request: Mapping[str, Any], shape: Any) -> dict[str, Any]:
    """A request in sagemaker-core's snake_case names (``_core.build_request``), in the API's own.

    Walked along botocore's model (``shape``, e.g. CreateTrainingJob's input shape):
    structure members are renamed, map keys (environment variables) are kept, ``None`` is
    left out, and a field the model does not know is an error, not silently dropped.
    """
    converted = _convert(request, shape, shape.name)
    assert isinstance(converted, dict)
    return converted


def _convert(value: Any, shape: Any, where: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        members = {_normalize(name): name for name in shape.members}
        out = {}
        for key, item in value.items():
            if item is None:
                continue
            api = members.get(_normalize(key))
            if api is None:
                raise ValueError(f"{where}: {key!r} is not a member of the API's {shape.name}")
            out[api] = _convert(item, shape.members[api], f"{where}.{api}")
        return out
    if kind == "list":
        return [_convert(item, shape.member, f"{where}[{n}]") for n, item in enumerate(value)]
    if kind == "map":
        return {key: _convert(item, shape.value, f"{where}[{key!r}]") for key, item in value.items()}
    return value


# ---- what SageMaker says -------------------------------------------------------------------


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _http_status(error: BaseException) -> int:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def brief(error: BaseException) -> str:
    """One line: the AWS error code and message, or the exception's type and text."""
    response = getattr(error, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        return f"{response['Error'].get('Code', '?')}: {response['Error'].get('Message', '')}".strip()
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _retry_codes() -> tuple[frozenset[str], frozenset[str], tuple[type[BaseException], ...]]:
    """botocore's own throttled and transient error codes and exception classes."""
    from botocore.retries import standard

    throttled = set(getattr(standard.ThrottledRetryableChecker, "_THROTTLED_ERROR_CODES", ()))
    throttled |= {"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"}
    throttled.discard("LimitExceededException")  # a quota, never cured by waiting seconds
    transient = set(getattr(standard.TransientRetryableChecker, "_TRANSIENT_ERROR_CODES", ()))
    transient |= {"InternalFailure", "InternalServerError", "ServiceUnavailable", "RequestTimeout"}
    classes = tuple(getattr(standard.TransientRetryableChecker, "_TRANSIENT_EXCEPTION_CLS", ()))
    if not classes:
        from botocore.exceptions import ConnectionError, HTTPClientError

        classes = (ConnectionError, HTTPClientError)
    return frozenset(throttled), frozenset(transient), classes


_THROTTLED, _TRANSIENT, _TRANSIENT_CLASSES = _retry_codes()


def is_throttled(error: BaseException) -> bool:
    return (
        _error_code(error) in _THROTTLED
        or _http_status(error) == 429
        or "rate exceeded" in brief(error).lower()
    )


def is_retryable(error: BaseException) -> bool:
    """Throttled or transient: the same call may succeed a little later."""
    if not isinstance(error, Exception):
        return False
    if is_throttled(error) or _error_code(error) in _TRANSIENT or _http_status(error) in (500, 502, 503, 504):
        return True
    return isinstance(error, _TRANSIENT_CLASSES)


def _answered(error: BaseException) -> bool:
    """SageMaker answered with a refusal (a 4xx error): the call had no effect."""
    return bool(_error_code(error)) and 400 <= _http_status(error) < 500


def not_found(error: BaseException) -> bool:
    """The job does not exist (SageMaker says ResourceNotFound, or ValidationException "... not found")."""
    code = _error_code(error)
    return code == "ResourceNotFound" or (
        code == "ValidationException" and "not found" in brief(error).lower()
    )


def _already_exists(error: BaseException) -> bool:
    code = _error_code(error)
    return code in ("ResourceInUse", "ValidationException") and "already exist" in brief(error).lower()


def _message(description: Mapping[str, Any]) -> str:
    """The StatusMessage of the current SecondaryStatus (the latest transition into it)."""
    secondary = description.get("SecondaryStatus")
    transitions = description.get("SecondaryStatusTransitions") or []
    for transition in reversed(transitions):
        if transition.get("Status") == secondary:
            return str(transition.get("StatusMessage") or "").strip()
    return ""


def state(description: Mapping[str, Any]) -> str:
    """``InProgress / Training: Training image download completed. Training in progress.``"""
    status = str(description.get("TrainingJobStatus"))
    secondary = description.get("SecondaryStatus")
    message = _message(description)
    text = status if not secondary or secondary == status else f"{status} / {secondary}"
    return f"{text}: {message}" if message else text


def end_reason(description: Mapping[str, Any]) -> str:
    """Why a job ended Stopped or Failed, in SageMaker's words, with what to change if it says.

    ``MaxRuntimeExceeded: Training job runtime exceeded MaxRuntimeInSeconds provided``
    rather than "Stopped: Stopped"; FailureReason first when SageMaker gives one.
    """
    status = str(description.get("TrainingJobStatus"))
    secondary = str(description.get("SecondaryStatus") or "")
    message = _message(description)
    parts = []
    if description.get("FailureReason"):
        parts.append(str(description["FailureReason"]).strip())
    # the secondary status, unless it only repeats the status ("Failed: Training job failed"
    # after a FailureReason says more)
    if secondary and (secondary != status or (message and not parts)):
        detail = f"{secondary}: {message}" if message else secondary
        if not any(detail in part for part in parts):
            parts.append(detail)
    if secondary in _LIMITS:
        key, setting = _LIMITS[secondary]
        limit = (description.get("StoppingCondition") or {}).get(key)
        parts.append(f"raise {setting}" + (f" (now {limit} s)" if limit else "") + " if the job needs longer")
    return "; ".join(parts) or status


def output_location(job: Job, description: Mapping[str, Any] | None) -> str:
    """Where SageMaker put (or puts) the job's output: its model.tar.gz, else the job's output prefix."""
    artifacts = ((description or {}).get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if artifacts:
        return str(artifacts)
    config = (description or {}).get("OutputDataConfig") or {}
    path = config.get("S3OutputPath")
    if not path:
        request = job.request
        config = request.get("output_data_config") or request.get("OutputDataConfig") or {}
        path = config.get("s3_output_path") or config.get("S3OutputPath") or "s3://?"
    return f"{str(path).rstrip('/')}/{job.name}/output/"


def stop_command(region: str, name: str) -> str:
    return f"aws sagemaker stop-training-job --region {region} --training-job-name {name}"


def _say(text: str) -> None:
    from quantsweep.redaction import redact_uri

    # whatever a message quotes (an error's text, a log line of the job): no URL's user:password@
    print(redact_uri(text), file=sys.stderr, flush=True)


def call(
    client: Any,
    operation: str,
    params: Mapping[str, Any],
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Any:
    """One SageMaker call (``describe_training_job``, ...), retried with backoff while throttled or transient."""
    method = getattr(client, operation)
    backoff = backoff or Backoff()
    rng = rng or random.Random()
    retry = 0
    while True:
        try:
            return method(**params)
        except Exception as error:
            if not is_retryable(error) or retry >= backoff.attempts:
                raise
            wait = backoff.delay(retry, rng)
            api = "".join(word.title() for word in operation.split("_"))
            _say(f"SageMaker {api}: {brief(error)}; retry {retry + 1} in {wait:.1f} s")
            sleep(wait)
            retry += 1


@contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP end the loop as Ctrl-C does, so it stops the jobs it started.

    A cancelled CI job or a closed terminal sends these, not SIGINT; without a handler the
    process would die at once and its jobs would bill on until their max runtime. Python
    delivers signals to the main thread only, so elsewhere nothing changes.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(number).name} received")

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


# ---- the loop --------------------------------------------------------------------------------


@dataclass
class _Running(Generic[J]):
    job: J
    since: float
    shown: str = ""  # the last state printed


@dataclass
class _Watch(Generic[J, R]):
    client: Any
    jobs: Sequence[J]
    max_parallel_jobs: int
    poll_seconds: float
    wait: bool
    bring_home: Callable[[J, dict[str, Any]], R]
    on_finished: Callable[[J, Outcome[R]], None] | None
    backoff: Backoff
    sleep: Callable[[float], None]
    rng: random.Random
    fetch_hint: str | None
    pending: list[J] = field(default_factory=list)
    running: dict[str, _Running[J]] = field(default_factory=dict)
    # a create whose answer was lost (a connection error, Ctrl-C): the job may exist
    creating: J | None = None
    outcomes: dict[str, Outcome[R]] = field(default_factory=dict)

    @property
    def region(self) -> str:
        return str(self.client.meta.region_name)

    def call(self, operation: str, **params: Any) -> Any:
        return call(self.client, operation, params, self.backoff, self.sleep, self.rng)

    # -- submitting

    def create(self, job: J, request: dict[str, Any]) -> None:
        """CreateTrainingJob, retried like ``call``; ``creating`` names the job while its fate is unknown."""
        self.creating = job
        retry = 0
        sent = False  # an earlier attempt may have created the job, its answer lost
        while True:
            try:
                self.client.create_training_job(**request)
                break
            except Exception as error:
                if sent and _already_exists(error):
                    break  # that earlier attempt did create it
                if not is_retryable(error) or retry >= self.backoff.attempts:
                    if _answered(error) and not sent:
                        self.creating = None  # refused: the job does not exist
                    raise
                sent = sent or not _answered(error)
                wait = self.backoff.delay(retry, self.rng)
                _say(
                    f"SageMaker CreateTrainingJob {job.name}: {brief(error)}; retry {retry + 1} in {wait:.1f} s"
                )
                self.sleep(wait)
                retry += 1
        # ``creating`` stays set until the caller records the job as running: an interruption
        # in between must not report a created job as never submitted

    def submit(self, shape: Any) -> None:
        while self.pending and len(self.running) < self.max_parallel_jobs:
            job = self.pending[0]
            request = api_request(job.request, shape)
            try:
                self.create(job, request)
            except Exception as error:
                if _error_code(error) != "ResourceLimitExceeded" or self.creating is not None:
                    raise  # (creating: an earlier attempt's answer was lost; the job may exist)
                # The account's quota (instances of this type, or jobs at once) is below what
                # the sweep asked for. The jobs already created are fine and already paid
                # for (billing starts with their instances): stopping them would waste that
                # and give nothing back, so they keep running and are watched to the end.
                # The rest cannot be created now; they are reported as not submitted, with
                # SageMaker's message and what to change, so that nothing is left untold.
                self.refuse(error)
                return
            self.pending.pop(0)
            self.running[job.name] = _Running(job, time.monotonic())
            self.creating = None
            _say(f"SageMaker {job.name}: submitted")

    def refuse(self, error: BaseException) -> None:
        names = [job.name for job in self.pending]
        for job in self.pending:
            self.outcomes[job.name] = Outcome(
                job.name, NOT_SUBMITTED, reason=f"not submitted: {brief(error)}", error=error
            )
        self.pending.clear()
        lines = [
            f"SageMaker refused to create {names[0]}: {brief(error)}",
            f"  not submitted ({len(names)}): {', '.join(names)}",
        ]
        if self.running:
            fate = "are watched to the end" if self.wait else "run on their own (wait=false)"
            lines.append(
                f"  the {len(self.running)} job(s) already running keep running and {fate}: "
                + ", ".join(self.running)
            )
            lines.append(
                f"  to run the rest: hydra.launcher.max_parallel_jobs={len(self.running)} (what the quota "
                "allowed now), or a higher quota (Service Quotas, Amazon SageMaker), then run those jobs again"
            )
        else:
            lines.append(
                "  no job was created: ask for a higher quota (Service Quotas, Amazon SageMaker) or choose "
                "another hydra.launcher.instance_type"
            )
        _say("\n".join(lines))

    # -- watching

    def poll(self) -> None:
        for name in list(self.running):
            watched = self.running[name]
            description = self.call("describe_training_job", TrainingJobName=name)
            shown = state(description)
            status = str(description.get("TrainingJobStatus"))
            if status in RUNNING:
                if shown != watched.shown:
                    watched.shown = shown
                    _say(f"SageMaker {name}: {shown} [{time.monotonic() - watched.since:.0f} s]")
                continue
            del self.running[name]
            self.finish(watched.job, description, status)

    def finish(self, job: J, description: dict[str, Any], status: str) -> None:
        outcome: Outcome[R] = Outcome(
            job.name,
            status,
            reason="" if status == "Completed" else end_reason(description),
            description=description,
            output=output_location(job, description),
        )
        self.outcomes[job.name] = outcome
        billed = description.get("BillableTimeInSeconds")
        reason = outcome.reason.strip().replace("\n", "\n    ")  # a FailureReason may hold lines
        _say(
            f"SageMaker {job.name}: {status}"
            + (f" ({reason})" if reason else "")
            + (f", billed {billed} s" if billed is not None else "")
        )
        # A bring-home that fails (S3 refuses, the disk is full) does not make the job less
        # finished: its output is safe on S3 and nothing more is billed for it, while the
        # other jobs are healthy and already paid for. So it is reported, the job's outcome
        # carries the error (the caller turns it into a failed job), and the loop goes on;
        # stopping every other job because one download failed would throw their spend away.
        try:
            outcome.result = self.bring_home(job, description)
            outcome.home = True
        except Exception as error:
            outcome.error = error
            _say(
                f"SageMaker {job.name}: finished on SageMaker ({status}), not brought home: {brief(error)}\n"
                f"  its output stays at {outcome.output}"
                + (f"; {self.fetch_hint}" if self.fetch_hint else "")
            )
        if self.on_finished is not None:
            self.on_finished(job, outcome)

    # -- the whole

    def run(self) -> dict[str, Outcome[R]]:
        if not self.wait and len(self.jobs) > self.max_parallel_jobs:
            raise ValueError(
                f"wait=false submits every job at once: {len(self.jobs)} jobs need "
                f"max_parallel_jobs >= {len(self.jobs)} (it is {self.max_parallel_jobs}); nothing was submitted"
            )
        shape = self.client.meta.service_model.operation_model("CreateTrainingJob").input_shape
        self.pending = list(self.jobs)
        with _signals_as_interrupts():  # also while stopping: a second signal is reported, not fatal
            try:
                self.watch(shape)
            except BaseException as error:  # Ctrl-C too: no job may be left billing untold
                self.fail_safe(error)
                raise
        self.summary()
        return {job.name: self.outcomes[job.name] for job in self.jobs if job.name in self.outcomes}

    def watch(self, shape: Any) -> None:
        self.submit(shape)
        if not self.wait:
            self.leave()
            return
        while self.running:
            self.sleep(self.poll_seconds)
            self.poll()
            self.submit(shape)

    def leave(self) -> None:
        """wait=false: the jobs created run on their own; say how to follow and stop them."""
        for name in self.running:
            self.outcomes[name] = Outcome(
                name, SUBMITTED, output=output_location(self.running[name].job, None)
            )
        if self.running:
            first = next(iter(self.running))
            _say(
                f"SageMaker: {len(self.running)} training job(s) submitted and not watched (wait=false); each runs "
                "until it ends or reaches its max runtime. Follow one with\n"
                f"  aws sagemaker describe-training-job --region {self.region} --training-job-name {first}\n"
                "and stop any of them with\n"
                + "\n".join(f"  {stop_command(self.region, name)}" for name in self.running)
            )
        self.running.clear()

    def summary(self) -> None:
        not_home = [o for o in self.outcomes.values() if o.error is not None and o.status != NOT_SUBMITTED]
        if not_home:
            _say(
                "SageMaker: finished on SageMaker, not brought home:\n"
                + "\n".join(f"  {o.name} ({o.status}): output at {o.output}" for o in not_home)
                + (f"\n  {self.fetch_hint}" if self.fetch_hint else "")
            )

    def fail_safe(self, error: BaseException) -> None:
        """Stop every job this loop started that may still run; say exactly what became of each."""
        targets = list(self.running)
        maybe = self.creating.name if self.creating is not None else None
        if maybe is not None and maybe not in targets:
            targets.append(maybe)
        done: set[str] = set()
        stopped: list[str] = []
        unstoppable: list[tuple[str, str]] = []
        uncreated: list[str] = []
        try:
            for name in targets:
                try:
                    self.call("stop_training_job", TrainingJobName=name)
                    stopped.append(name)
                except Exception as stop_error:
                    # refused: the job may have ended meanwhile, or never been created
                    status = self.status_after_failed_stop(name)
                    if status is None:
                        uncreated.append(name)
                    elif status == "Stopping":
                        stopped.append(name)
                    elif status not in RUNNING:
                        pass  # ended meanwhile: reported below as finished, not brought home
                    else:
                        unstoppable.append((name, brief(stop_error)))
                done.add(name)
        finally:
            # a second Ctrl-C while stopping: what was not dealt with may still be running
            unstoppable += [(name, "not stopped: interrupted") for name in targets if name not in done]
            self.report_failure(error, stopped, unstoppable, uncreated, maybe)

    def status_after_failed_stop(self, name: str) -> str | None:
        """The job's TrainingJobStatus; None if it does not exist, InProgress if SageMaker won't say."""
        try:
            description = self.call("describe_training_job", TrainingJobName=name)
        except Exception as error:
            return None if not_found(error) else "InProgress"
        status = str(description.get("TrainingJobStatus"))
        if status not in RUNNING and name in self.running:
            job = self.running[name].job
            self.outcomes[name] = Outcome(
                name, status, reason=end_reason(description), description=description,
                output=output_location(job, description),
            )  # fmt: skip
        return status

    def report_failure(
        self,
        error: BaseException,
        stopped: list[str],
        unstoppable: list[tuple[str, str]],
        uncreated: list[str],
        maybe: str | None,
    ) -> None:
        what = (
            f"was interrupted ({error.args[0] if error.args else 'Ctrl-C'})"
            if isinstance(error, KeyboardInterrupt)
            else f"failed ({brief(error)})"
        )
        lines = [
            f"SageMaker: the watch loop {what}; stopping the training jobs it started, so that none keeps billing."
        ]
        lines.append(f"  stopped (StopTrainingJob accepted): {', '.join(stopped) or 'none'}")
        for name, why in unstoppable:
            created = " (its create was sent; it may exist)" if name == maybe else ""
            lines.append(f"  STILL RUNNING, could not stop {name}{created}: {why}")
            lines.append(f"    stop it: {stop_command(self.region, name)}")
        if unstoppable:
            lines.append(
                "    (with working credentials; until then each runs on, billed, until it ends or reaches its "
                "max runtime)"
            )
        for name in uncreated:
            lines.append(f"  not created after all: {name}")
        not_home = [
            o for o in self.outcomes.values() if o.status not in (NOT_SUBMITTED, SUBMITTED) and not o.home
        ]
        for outcome in not_home:
            lines.append(
                f"  finished on SageMaker, not brought home: {outcome.name} ({outcome.status}), "
                f"output at {outcome.output}"
            )
        if not_home and self.fetch_hint:
            lines.append(f"  {self.fetch_hint}")
        never = [job.name for job in self.pending if job.name not in uncreated and job.name != maybe]
        never += [o.name for o in self.outcomes.values() if o.status == NOT_SUBMITTED]
        if never:
            lines.append(f"  not submitted: {', '.join(never)}")
        lines += self.warm_pool_note(stopped)
        _say("\n".join(lines))

    def warm_pool_note(self, stopped: list[str]) -> list[str]:
        """With a warm pool (keep_alive_seconds), a stopped job's instance stays, billed, for its keep-alive."""
        keep = {}
        for job in self.jobs:
            resources = job.request.get("resource_config") or job.request.get("ResourceConfig") or {}
            seconds = resources.get("keep_alive_period_in_seconds") or resources.get(
                "KeepAlivePeriodInSeconds"
            )
            if job.name in stopped and seconds:
                keep[job.name] = int(seconds)
        if not keep:
            return []
        return [
            f"  warm pool: the instances of the stopped jobs stay, billed, for up to {max(keep.values())} s "
            "(hydra.launcher.keep_alive_seconds); release one at once with",
            *(
                f"    aws sagemaker update-training-job --region {self.region} --training-job-name {name} "
                "--resource-config KeepAlivePeriodInSeconds=0"
                for name in keep
            ),
        ]


def watch(
    client: Any,
    jobs: Sequence[J],
    *,
    max_parallel_jobs: int,
    poll_seconds: float,
    wait: bool,
    bring_home: Callable[[J, dict[str, Any]], R],
    on_finished: Callable[[J, Outcome[R]], None] | None = None,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    fetch_hint: str | None = None,
) -> dict[str, Outcome[R]]:
    """Submit ``jobs`` (up to ``max_parallel_jobs`` at once), watch them, bring each home.

    ``client`` is a botocore ``sagemaker`` client (``boto3.Session(...).client("sagemaker")``);
    each job's ``request`` is a CreateTrainingJob request in sagemaker-core's snake_case
    names or the API's own. ``bring_home(job, description)`` is called once for every job
    that ends (Completed, Failed or Stopped; the last DescribeTrainingJob answer tells
    which, and :func:`end_reason` why); ``on_finished(job, outcome)`` after it, also when
    it raised. An exception from ``bring_home`` is the job's (its outcome carries it); any
    other exception, Ctrl-C included, stops the jobs still running, says so, and goes on.
    ``fetch_hint`` is printed beside every job not brought home (how to get it later).

    Returns an :class:`Outcome` per job, in the order of ``jobs``. With ``wait=False``
    the created jobs are ``SUBMITTED`` and the call returns at once.
    """
    if max_parallel_jobs < 1:
        raise ValueError(f"max_parallel_jobs must be at least 1, not {max_parallel_jobs}")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("training job names must be unique within a sweep")
    return _Watch(
        client=client,
        jobs=jobs,
        max_parallel_jobs=max_parallel_jobs,
        poll_seconds=poll_seconds,
        wait=wait,
        bring_home=bring_home,
        on_finished=on_finished,
        backoff=backoff or Backoff(),
        sleep=sleep,
        rng=rng or random.Random(),
        fetch_hint=fetch_hint,
    ).run()
