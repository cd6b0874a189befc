"""Runs our real Lambda handlers in this process whenever moto invokes a function (directly, from Step
Functions, from SNS), because moto can only run Lambda code in Docker.

Each invocation sees its function's environment through a per-thread view of ``os.environ``: Step
Functions calls Lambda over HTTP from its own thread, and a handler may trigger another invocation
synchronously (SNS publish, invoke), so a process-wide lock held for a whole call could deadlock.

The AWS calls a handler makes can be observed (``observe_calls``), e.g. to record them as CloudTrail
records the calls of the function's role: botocore's ``BaseClient._make_api_call`` is wrapped while
installed, and consults the observer of the invocation running on the calling thread. They can also be
checked (``check_calls``) the way AWS checks the function's credentials where moto does not, right
around the call itself: a refusal is then the call's error, which the observer records too.

Every call a function or a state machine makes with its role can also be heard (``listen_to_calls``), from
any thread: a client remembers the function that created it, so the reads a handler spreads over a thread
pool count as the function's, and a Step Functions task's calls count as its state machine's. With
``IMMUTABLE_GUARD_CALL_LOG`` set, ``call_log`` writes them down (the test suite's least-privilege proof).

In Lambda every thread of the process belongs to the invocation running in it: a call a handler makes on
a worker of its ``ThreadPoolExecutor`` is signed with the function's role, recorded by CloudTrail as the
role's and echoed by Config like any other. So work a handler submits to a thread pool runs with the
invocation's context here too (its environment, principal, observer and checks): Detect's and Contain's
interface moves, made on pool threads, become CloudTrail records and Config items, as in AWS.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_state_lock = threading.RLock()
_install_count = 0
_original_invoke: Callable[..., tuple[str, bool, str]] | None = None
_repo_root: Path | None = None
_code_dirs: dict[str, Path] = {}
_handlers: dict[tuple[str, str, str], Callable[[Any, Any], Any]] = {}
_extracted: dict[str, Path] = {}
_local = threading.local()
_original_make_api_call: Callable[..., Any] | None = None
_original_client_init: Callable[..., None] | None = None
_original_task_evals: list[tuple[Any, Callable[..., Any]]] = []
# The attribute of a boto3 client that names the function or state machine that created it.
_CREATED_BY = "_immutable_guard_principal"
# What a thread knows of the invocation running on it (see the module's docstring), carried to the
# workers of the thread pools its handler starts.
_INVOCATION_CONTEXT = ("environ", "principal", "calls", "function")
_original_submit: Callable[..., Any] | None = None


class CallObserver(Protocol):
    """Sees every AWS call of one invocation, and its end."""

    def call(self, model: Any, params: dict[str, Any], make_call: Callable[[], Any]) -> Any:
        """Make the call (``make_call()``) and return what it returns (or raise what it raises)."""

    def finished(self) -> None:
        """The invocation ended (its calls are no longer observed)."""


ObserverFactory = Callable[[Any], CallObserver | None]
_observer_factories: list[ObserverFactory] = []

CallCheck = Callable[[Any, Any, dict[str, Any]], AbstractContextManager[None]]
"""``check(function, operation_model, params)``: a context entered around the function's call; raising
on entry refuses the call (a ClientError shaped as AWS's)."""
_call_checks: list[CallCheck] = []


def check_calls(check: CallCheck) -> Callable[[], None]:
    """Have ``check`` wrap every AWS call a handler makes. Returns the function that stops it."""
    with _state_lock:
        _call_checks.append(check)

    def stop() -> None:
        with _state_lock:
            if check in _call_checks:
                _call_checks.remove(check)

    return stop


def observe_calls(factory: ObserverFactory) -> Callable[[], None]:
    """Have ``factory(function)`` (moto's LambdaFunction) give each invocation an observer of its calls,
    or None. Returns the function that stops it."""
    with _state_lock:
        _observer_factories.append(factory)

    def stop() -> None:
        with _state_lock:
            if factory in _observer_factories:
                _observer_factories.remove(factory)

    return stop


CallListener = Callable[[str, Any, dict[str, Any]], None]
_call_listeners: list[CallListener] = []


def listen_to_calls(listener: CallListener) -> Callable[[], None]:
    """Have ``listener(principal, operation_model, params)`` hear, before it is made, every AWS call made
    with a role: ``principal`` is the function name of a handler run here, or the ARN of the state machine
    whose task calls. Returns the function that stops it."""
    with _state_lock:
        _call_listeners.append(listener)

    def stop() -> None:
        with _state_lock:
            if listener in _call_listeners:
                _call_listeners.remove(listener)

    return stop


@contextmanager
def acting_as(principal: str | None) -> Iterator[None]:
    """This thread's calls (and the clients it creates) are ``principal``'s until the block ends; None:
    nobody's, e.g. a runtime's own calls made while a handler waits."""
    previous = getattr(_local, "principal", None)
    _local.principal = principal if principal is not None else ""
    try:
        yield
    finally:
        _local.principal = previous


def _principal_of(client: Any) -> str:
    """Who makes a call on this thread: the invocation or task running here, else whoever created the
    client (a thread the handler started itself)."""
    current: str | None = getattr(_local, "principal", None)
    if current is not None:
        return current
    return str(getattr(client, _CREATED_BY, "") or "")


def _hear(client: Any, operation_name: str, api_params: dict[str, Any]) -> None:
    with _state_lock:
        listeners = list(_call_listeners)
    if not listeners:
        return
    principal = _principal_of(client)
    if not principal:
        return
    member_role = _member_role_of(client)
    if member_role:
        # Made with a member role's credentials (organisation mode): the member role's call, which the
        # function's own role does not need (it needs sts:AssumeRole only). Listeners see it as
        # "<principal>@<role name>", which the call log counts as the member role's.
        principal = f"{principal}@{member_role}"
    model = client.meta.service_model.operation_model(operation_name)
    for listener in listeners:
        try:
            listener(principal, model, api_params)
        except Exception:
            logger.exception("a call listener failed on %s", operation_name)


# The guard's member roles (organization/member-roles.yaml): ImmutableGuard-Member-<X> of any account.
_MEMBER_ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::\d{12}:role/(ImmutableGuard-Member-[\w+=,.@-]+)$")
_member_role_by_key: dict[str, str | None] = {}


def _member_role_of(client: Any) -> str | None:
    """The name of the member role whose assumed credentials the client signs with, or None. moto keeps
    each assumed role's access key in the STS backend of the role's account."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    key = getattr(credentials, "access_key", None)
    if not key:
        return None
    with _state_lock:
        if key in _member_role_by_key:
            return _member_role_by_key[key]
    from moto.sts.models import sts_backends

    found: str | None = None
    for account in list(sts_backends.keys()):
        for partition in list(sts_backends[account].keys()):
            assumed = sts_backends[account][partition].get_assumed_role_from_access_key(key)
            match = _MEMBER_ROLE_ARN.match(assumed.role_arn) if assumed is not None else None
            if match:
                found = match.group(1)
    with _state_lock:
        _member_role_by_key[key] = found
    return found


def _stamped_client_init(client: Any, *args: Any, **kwargs: Any) -> None:
    """botocore's ``BaseClient.__init__``; the client also remembers who created it."""
    original = _original_client_init
    assert original is not None
    original(client, *args, **kwargs)
    creator = getattr(_local, "principal", None)
    if creator:
        setattr(client, _CREATED_BY, creator)


def _submit_in_invocation(executor: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``ThreadPoolExecutor.submit``; the work runs with the submitting thread's invocation context."""
    original = _original_submit
    assert original is not None
    carried = {name: getattr(_local, name, None) for name in _INVOCATION_CONTEXT}
    if all(value is None for value in carried.values()):
        return original(executor, fn, *args, **kwargs)

    def in_invocation(*call_args: Any, **call_kwargs: Any) -> Any:
        previous = {name: getattr(_local, name, None) for name in _INVOCATION_CONTEXT}
        for name, value in carried.items():
            setattr(_local, name, value)
        try:
            return fn(*call_args, **call_kwargs)
        finally:
            for name, value in previous.items():
                setattr(_local, name, value)

    return original(executor, in_invocation, *args, **kwargs)


def _in_state_machine(original: Callable[..., Any]) -> Callable[..., Any]:
    """A Task state's evaluation in moto, whose calls are its state machine's (made with its role)."""

    def evaluate(state: Any, env: Any) -> Any:
        machine = env.states.context_object.context_object_data["StateMachine"]["Id"]
        with acting_as(str(machine)):
            return original(state, env)

    return evaluate


def _observer_for(function: Any) -> CallObserver | None:
    with _state_lock:
        factories = list(_observer_factories)
    for factory in factories:
        observer = factory(function)
        if observer is not None:
            return observer
    return None


def _observed_make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
    """botocore's ``_make_api_call``, checked and shown to the observer of the handler running on this
    thread."""
    original = _original_make_api_call
    assert original is not None
    _hear(client, operation_name, api_params)
    observer: CallObserver | None = getattr(_local, "calls", None)
    function = getattr(_local, "function", None)
    with _state_lock:
        checks = list(_call_checks) if function is not None else []
    if observer is None and not checks:
        return original(client, operation_name, api_params)
    # What the observer or a check calls itself (delivering an event, invoking Detect) is not the
    # function's call.
    _local.calls, _local.function = None, None
    try:
        model = client.meta.service_model.operation_model(operation_name)

        def make_call() -> Any:
            with ExitStack() as checked:
                for check in checks:
                    checked.enter_context(check(function, model, api_params))
                return original(client, operation_name, api_params)

        # What the observer or a check calls is not the function's call: heard as nobody's.
        with acting_as(None):
            return make_call() if observer is None else observer.call(model, api_params, make_call)
    finally:
        _local.calls, _local.function = observer, function


@dataclass
class LambdaContext:
    """The subset of the Lambda context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: float
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


class _ThreadEnviron(os._Environ):  # type: ignore[type-arg]
    """os.environ, except that a thread running a handler reads and writes its own copy."""

    def _view(self) -> dict[str, str] | None:
        return getattr(_local, "environ", None)

    def __getitem__(self, key: str) -> str:
        view = self._view()
        return view[key] if view is not None else super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        view = self._view()
        if view is None:
            super().__setitem__(key, value)
        else:
            view[key] = str(value)

    def __delitem__(self, key: str) -> None:
        view = self._view()
        if view is None:
            super().__delitem__(key)
        else:
            del view[key]

    def __iter__(self) -> Iterator[str]:
        view = self._view()
        return iter(list(view)) if view is not None else super().__iter__()

    def __len__(self) -> int:
        view = self._view()
        return len(view) if view is not None else super().__len__()

    def copy(self) -> dict[str, str]:
        return dict(self)


@contextmanager
def function_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Let this thread see the process environment plus ``variables`` until the block ends."""
    previous = getattr(_local, "environ", None)
    base = dict(previous) if previous is not None else dict(os.environ)
    _local.environ = {**base, **{key: str(value) for key, value in variables.items()}}
    try:
        yield
    finally:
        _local.environ = previous


def register(function_name: str, code_dir: Path) -> None:
    """Run ``function_name`` from the source folder ``code_dir`` (its CodeUri), not from its zip."""
    with _state_lock:
        _code_dirs[function_name] = Path(code_dir).resolve()


def install(repo_root: Path | None = None) -> None:
    """Make moto run Lambda handlers in this process. Calls nest: each needs its own ``uninstall()``.

    Parameters
    ----------
    repo_root:
        Repository whose ``functions/<function name>/`` is used for functions nobody registered and
        whose zip holds no handler.
    """
    global _install_count, _original_invoke, _repo_root, _original_make_api_call, _original_client_init
    global _original_submit
    from concurrent.futures import ThreadPoolExecutor

    from botocore.client import BaseClient
    from moto.awslambda.models import LambdaFunction

    from immutable_guard.local import call_log

    with _state_lock:
        if repo_root is not None:
            _repo_root = Path(repo_root).resolve()
        if _install_count == 0:
            _original_invoke = LambdaFunction._invoke_lambda
            LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
            _original_make_api_call = getattr(BaseClient, "_make_api_call")  # noqa: B009 (private)
            setattr(BaseClient, "_make_api_call", _observed_make_api_call)  # noqa: B010
            _original_client_init = BaseClient.__init__
            BaseClient.__init__ = _stamped_client_init  # type: ignore[method-assign,assignment]
            _original_submit = ThreadPoolExecutor.submit
            ThreadPoolExecutor.submit = _submit_in_invocation  # type: ignore[method-assign]
            for task_class in _task_classes():
                original = task_class.__dict__["_eval_execution"]
                _original_task_evals.append((task_class, original))
                task_class._eval_execution = _in_state_machine(original)
            if not isinstance(os.environ, _ThreadEnviron):
                os.environ.__class__ = _ThreadEnviron
            log = call_log.log_from_environment()
            if log is not None:
                _call_listeners.append(log)
        _install_count += 1


def _task_classes() -> list[Any]:
    """moto's Task states that call AWS with the state machine's role: service integrations
    (``arn:aws:states:::lambda:invoke`` and others) and plain Lambda function ARNs."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda import (
        StateTaskLambda,
    )

    return [StateTaskService, StateTaskLambda]


def uninstall() -> None:
    """Undo one ``install()``; the last one restores moto and forgets loaded handlers."""
    global _install_count, _original_invoke, _original_make_api_call, _original_client_init
    global _original_submit
    from concurrent.futures import ThreadPoolExecutor

    from botocore.client import BaseClient
    from moto.awslambda.models import LambdaFunction

    with _state_lock:
        if _install_count == 0:
            return
        _install_count -= 1
        if _install_count:
            return
        if _original_invoke is not None:
            LambdaFunction._invoke_lambda = _original_invoke  # type: ignore[method-assign]
            _original_invoke = None
        if _original_make_api_call is not None:
            setattr(BaseClient, "_make_api_call", _original_make_api_call)  # noqa: B010
            _original_make_api_call = None
        if _original_client_init is not None:
            BaseClient.__init__ = _original_client_init  # type: ignore[method-assign]
            _original_client_init = None
        if _original_submit is not None:
            ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
            _original_submit = None
        while _original_task_evals:
            task_class, original = _original_task_evals.pop()
            task_class._eval_execution = original
        if type(os.environ) is _ThreadEnviron:
            os.environ.__class__ = os._Environ  # type: ignore[assignment]
        _code_dirs.clear()
        _handlers.clear()
        _extracted.clear()
        _observer_factories.clear()
        _call_checks.clear()
        _call_listeners.clear()


def _invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
    """Replacement for ``LambdaFunction._invoke_lambda``: (payload JSON, errored, log text)."""
    if isinstance(event, str | bytes):
        event = json.loads(event or "{}")
    elif event is None:
        event = {}
    context = LambdaContext(
        function_name=function.function_name,
        invoked_function_arn=function.function_arn,
        memory_limit_in_mb=int(function.memory_size),
        timeout_seconds=float(function.timeout),
        function_version=str(function.version),
        log_group_name=f"/aws/lambda/{function.function_name}",
        log_stream_name=f"local/[{function.version}]{uuid.uuid4().hex}",
    )
    started = f"START RequestId: {context.aws_request_id} Version: {context.function_version}\n"
    observer = _observer_for(function)
    try:
        with (
            function_environment(_lambda_environment(function, context)),
            acting_as(str(function.function_name)),
            _observed_by(observer),
            _calling_as(function),
        ):
            handler = _load_handler(function)
            result = handler(event, context)
        payload = json.dumps(result, default=str)
    except Exception as exc:
        error = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "requestId": context.aws_request_id,
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        logger.info("%s raised %s: %s", function.function_name, error["errorType"], exc)
        log = started + "".join(traceback.format_exception(exc)) + _end(context)
        return json.dumps(error), True, log
    return payload, False, started + _end(context)


@contextmanager
def _observed_by(observer: CallObserver | None) -> Iterator[None]:
    """This thread's calls go to ``observer`` until the block ends; then it hears that the invocation
    ended (even when the handler raised: what it changed before is still changed)."""
    previous = getattr(_local, "calls", None)
    _local.calls = observer
    try:
        yield
    finally:
        _local.calls = previous
        if observer is not None:
            try:
                with acting_as(None):  # what the observer does then is not the function's call
                    observer.finished()
            except Exception:
                logger.exception("observing the end of an invocation failed")


@contextmanager
def _calling_as(function: Any) -> Iterator[None]:
    """This thread's calls are the function's (its role's) until the block ends."""
    previous = getattr(_local, "function", None)
    _local.function = function
    try:
        yield
    finally:
        _local.function = previous


def _end(context: LambdaContext) -> str:
    return f"END RequestId: {context.aws_request_id}\n"


def _lambda_environment(function: Any, context: LambdaContext) -> dict[str, str]:
    region = str(function.region)
    variables = {
        # No X-Ray daemon runs here; the function's own variables may still turn tracing on.
        "POWERTOOLS_TRACE_DISABLED": "true",
        "_HANDLER": str(function.handler),
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.run_time}",
        "AWS_LAMBDA_FUNCTION_NAME": context.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": context.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(context.memory_limit_in_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": context.log_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": context.log_stream_name,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    variables.update({key: str(value) for key, value in (function.environment_vars or {}).items()})
    return variables


def _load_handler(function: Any) -> Callable[[Any, Any], Any]:
    handler_spec = str(function.handler or "")
    key = (str(function.function_arn), str(getattr(function, "code_sha_256", "")), handler_spec)
    with _state_lock:
        cached = _handlers.get(key)
        if cached is not None:
            return cached
        module_path, _, attribute = handler_spec.rpartition(".")
        if not module_path or not attribute:
            raise ImportError(f"handler {handler_spec!r} of {function.function_name} is not module.function")
        code_dir = _code_dir(function, module_path)
        module = _import_module(function.function_name, code_dir, module_path)
        handler = getattr(module, attribute, None)
        if not callable(handler):
            raise ImportError(f"{module_path}.{attribute} of {function.function_name} is not callable")
        _handlers[key] = handler
        return handler  # type: ignore[no-any-return]


def _module_file(code_dir: Path, module_path: str) -> Path:
    return code_dir / (module_path.replace(".", "/") + ".py")


def _code_dir(function: Any, module_path: str) -> Path:
    name = str(function.function_name)
    registered = _code_dirs.get(name)
    if registered is not None:
        return registered
    extracted = _extract_zip(function)
    if extracted is not None and _module_file(extracted, module_path).is_file():
        return extracted
    if _repo_root is not None and (_repo_root / "functions" / name).is_dir():
        return _repo_root / "functions" / name
    raise ImportError(f"no code for {name}: register its folder, or deploy a zip that holds {module_path}.py")


def _extract_zip(function: Any) -> Path | None:
    code = getattr(function, "code_bytes", b"")
    if not code:
        return None
    digest = str(getattr(function, "code_sha_256", "")) or uuid.uuid4().hex
    if digest not in _extracted:
        target = Path(tempfile.mkdtemp(prefix="immutable-guard-lambda-"))
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            archive.extractall(target)
        _extracted[digest] = target
    return _extracted[digest]


def _import_module(function_name: str, code_dir: Path, module_path: str) -> ModuleType:
    """Import the handler module under a unique name, so two functions' app.py never collide."""
    path = _module_file(code_dir, module_path)
    safe_name = re.sub(r"\W", "_", function_name)
    unique = f"_immutable_guard_lambda_{safe_name}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} for {function_name}")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.path.insert(0, str(code_dir))
    try:
        sys.modules[unique] = module
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(unique, None)
        raise
    finally:
        sys.path.remove(str(code_dir))
        # Sibling modules (e.g. a function's own settings.py) stay bound inside the handler module but
        # leave sys.modules, so another function's module of the same name is imported afresh.
        for name in set(sys.modules) - before - {unique}:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin and Path(origin).resolve().is_relative_to(code_dir):
                del sys.modules[name]
    return module
