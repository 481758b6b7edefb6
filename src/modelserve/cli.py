"""The ``modelserve`` command.

``modelserve serve`` runs a server; every flag overrides the same setting from ``--config``. Flags and
settings share names, so ``--max-queue-size`` is ``scheduling.max_queue_size`` in the YAML file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from modelserve import __version__
from modelserve.config import SettingsError, load_settings

__all__ = ["main"]


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of workers or 'auto'") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserve",
        description="An inference server for Triton-style model repositories (REST and gRPC, KServe V2 protocol).",
    )
    parser.add_argument("--version", action="version", version=f"modelserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a model repository",
        description="Serve every model of a Triton-style model repository over REST and gRPC until SIGTERM/SIGINT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        metavar="PATH",
        help="model repository folder (<model>/config.pbtxt, <model>/<version>/...) "
        "[setting repository.path, default examples/models]",
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML settings file; flags override its values",
    )
    serve.add_argument("--host", default=None, help="address to bind [server.host, default 127.0.0.1]")
    serve.add_argument(
        "--server-name",
        default=None,
        metavar="NAME",
        help="the name server metadata reports; 'triton' for clients that check it [server.name, default modelserve]",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N|auto",
        help="server processes sharing the ports, each with its own models; auto = the CPUs available "
        "[server.workers, default 1]",
    )
    serve.add_argument("--http-port", type=int, default=None, help="REST port [http.port, default 8000]")
    serve.add_argument("--grpc-port", type=int, default=None, help="gRPC port [grpc.port, default 8001]")
    serve.add_argument(
        "--metrics-port", type=int, default=None, help="also serve /metrics on this port [metrics.port, default none]"
    )
    serve.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also answer /v2/health/live and /ready on this port, from a thread of its own (for Kubernetes "
        "probes) [http.health_port, default none]",
    )
    serve.add_argument(
        "--model-control-mode",
        choices=["none", "explicit", "poll"],
        default=None,
        help="none: load all models at start, model load/unload API refused; explicit: load only "
        "--load-model names, then the repository API; poll: load all, then apply repository changes every "
        "--repository-poll-secs [repository.control_mode, default none]",
    )
    serve.add_argument(
        "--repository-poll-secs",
        type=float,
        default=None,
        metavar="S",
        help="poll mode: seconds between looks at the repository [repository.poll_secs, default 15]",
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=None,
        metavar="NAME",
        help="in explicit mode, a model to load at start ('*' = all); repeatable",
    )
    serve.add_argument(
        "--memory-budget-mb",
        type=int,
        default=None,
        help="memory the loaded models may take; least recently used unpinned idle models are unloaded to "
        "make room [repository.memory_budget_mb, default 0 = none]",
    )
    serve.add_argument(
        "--pin-model",
        action="append",
        default=None,
        metavar="NAME",
        help="a model never unloaded by the memory budget or idle unloading; repeatable",
    )
    serve.add_argument(
        "--unload-idle-secs",
        type=float,
        default=None,
        help="unload unpinned models not used for this long [repository.unload_idle_secs, default 0 = never]",
    )
    serve.add_argument(
        "--load-on-demand",
        action="store_true",
        default=None,
        help="load a known, unloaded model on its first request [repository.load_on_demand]",
    )
    serve.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        help="requests that may wait per model version [scheduling.max_queue_size, default 256]",
    )
    serve.add_argument(
        "--max-inflight-requests",
        type=int,
        default=None,
        help="server-wide cap on admitted requests [server.max_inflight_requests, default 2048]",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="largest request body after decompression [limits.max_request_bytes, default 64 MiB]",
    )
    serve.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="on SIGTERM, longest wait for in-flight requests [server.drain_timeout_s, default 30]",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level")
    _admin_commands(commands)
    _profile_command(commands)
    return parser


def _profile_command(commands: Any) -> None:
    profile = commands.add_parser(
        "profile",
        help="build a model version's drift reference profile from training data",
        description="Bin each feature of the training data (quantile bins; categorical features by value) and "
        "store the profile as <model>/<version>.profile.json, which drift detection compares served inputs with.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    profile.add_argument("model", help="model name (a folder of the repository)")
    profile.add_argument("data", type=Path, help="training inputs: .npy (no pickles) or .csv, shape [rows, features]")
    profile.add_argument("--model-repository", type=Path, default=Path("examples/models"), help="the repository")
    profile.add_argument("--version", default="", help="version folder (default: the highest)")
    profile.add_argument("--input", default="", help="input tensor the data is for (default: the model's only input)")
    profile.add_argument("--bins", type=int, default=10, help="quantile bins per continuous feature")
    profile.add_argument("--feature-names", default="", help="comma-separated names, one per feature")
    profile.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="class labels or predictions for the rows (.npy/.csv), for drift of the predicted-class distribution",
    )
    profile.add_argument(
        "--prediction-output", default="", help="output holding the predicted class (default: the first integer one)"
    )


def _read_array(path: Path) -> Any:
    import numpy as np

    if path.suffix == ".csv":
        return np.loadtxt(path, delimiter=",", ndmin=2)
    return np.load(path, allow_pickle=False)


def _run_profile(args: argparse.Namespace) -> int:
    from tritonclient.grpc import model_config_pb2 as mc

    from modelserve.core.errors import ModelServeError
    from modelserve.core.names import check_model_name
    from modelserve.core.paths import inside
    from modelserve.observability.drift_profile import Profile, ProfileError, profile_path
    from modelserve.repository.model_config import read_model_config
    from modelserve.repository.scan import list_versions

    try:
        check_model_name(args.model)
        model_dir = args.model_repository / args.model
        if not (model_dir / "config.pbtxt").is_file():
            raise ProfileError(f"no model '{args.model}' in {args.model_repository} (no {model_dir}/config.pbtxt)")
        # The repository is a jail for this command too: nothing read or written through a link out of it.
        inside(
            args.model_repository,
            model_dir / "config.pbtxt",
            what=f"model '{args.model}': config",
            allow_symlinks=False,
        )
        config = read_model_config(model_dir, args.model)
        versions = list_versions(model_dir)
        version = args.version or (str(max(versions)) if versions else "")
        if not version or not (model_dir / version).is_dir():
            raise ProfileError(f"model '{args.model}' has no version folder '{version or '<none>'}'")
        inputs = [tensor.name for tensor in config.input]
        input_name = args.input or (inputs[0] if len(inputs) == 1 else "")
        if not input_name:
            raise ProfileError(f"model '{args.model}' has inputs {inputs or '(none declared)'}: name one with --input")
        if inputs and input_name not in inputs:
            raise ProfileError(f"model '{args.model}' has no input '{input_name}'; its inputs: {inputs}")
        labels = _read_array(args.labels) if args.labels is not None else None
        prediction_output = args.prediction_output
        if labels is not None and not prediction_output:
            integer = [o.name for o in config.output if "INT" in mc.DataType.Name(o.data_type)]
            outputs = integer or [o.name for o in config.output]
            if not outputs:
                raise ProfileError("name the output that holds the predicted class with --prediction-output")
            prediction_output = outputs[0]
        profile = Profile.build(
            _read_array(args.data),
            model=args.model,
            version=version,
            input_name=input_name,
            feature_names=[n.strip() for n in args.feature_names.split(",")] if args.feature_names else None,
            bins=args.bins,
            labels=labels,
            prediction_output=prediction_output,
        )
        declared = {tensor.name: tensor for tensor in config.input}
        if input_name in declared:
            profile.check_fits(list(declared[input_name].dims), batched=config.max_batch_size > 0)
        else:
            print(
                f"modelserve profile: note: config.pbtxt does not list input '{input_name}', so the data's "
                "feature count is not checked against it; the server counts requests that do not fit the "
                "profile in modelserve_drift_mismatched_requests_total",
                file=sys.stderr,
            )
        path = profile_path(model_dir, version)
        inside(
            args.model_repository,
            path,
            what=f"model '{args.model}' version {version}: drift profile",
            allow_symlinks=False,
            must_exist=False,
        )
        profile.save(path)
    except (ProfileError, ModelServeError, OSError, ValueError) as exc:
        print(f"modelserve profile: {exc}", file=sys.stderr)
        return 1
    kinds = sum(f.continuous for f in profile.features)
    print(
        f"{path}: {profile.rows} rows, {len(profile.features)} features ({kinds} continuous), "
        f"prediction classes: {list(profile.prediction.classes) if profile.prediction else 'none'}"
    )
    return 0


def _admin_commands(commands: Any) -> None:
    def with_url(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--url", default="http://127.0.0.1:8000", help="the server's REST address")
        return command

    with_url(commands.add_parser("models", help="list a running server's models, versions and states"))
    load = with_url(commands.add_parser("load", help="load (or reload) a model (server in explicit mode)"))
    load.add_argument("model")
    unload = with_url(commands.add_parser("unload", help="unload a model (server in explicit mode)"))
    unload.add_argument("model")
    alias = commands.add_parser("alias", help="list or set a model's version aliases")
    alias_commands = alias.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    alias_list = with_url(alias_commands.add_parser("list", help="show a model's aliases and their history"))
    alias_list.add_argument("model")
    alias_set = with_url(
        alias_commands.add_parser("set", help="point an alias at a loaded version: alias set iris production 3")
    )
    alias_set.add_argument("model")
    alias_set.add_argument("alias")
    alias_set.add_argument("version")
    rollback = with_url(commands.add_parser("rollback", help="point an alias (production) back at its last version"))
    rollback.add_argument("model")
    rollback.add_argument("--alias", default="production")
    route = commands.add_parser("route", help="show, set or clear a model's traffic routing policy")
    route_commands = route.add_subparsers(dest="route_command", metavar="ACTION", required=True)
    route_show = with_url(route_commands.add_parser("show", help="the policy as JSON and each arm's share"))
    route_show.add_argument("model")
    route_set = with_url(
        route_commands.add_parser(
            "set", help="set the policy from a JSON or YAML file, or inline JSON: route set iris policy.yaml"
        )
    )
    route_set.add_argument("model")
    route_set.add_argument("policy", help="a .json/.yaml file holding the policy, or the policy as inline JSON")
    route_clear = with_url(route_commands.add_parser("clear", help="remove the policy (and its file)"))
    route_clear.add_argument("model")


def _run_admin(args: argparse.Namespace) -> int:
    from modelserve.admin_client import AdminClient, AdminError

    try:
        client = AdminClient(args.url)
        if args.command == "models":
            entries = client.models()
            print(f"{'MODEL':<24} {'VERSION':<8} {'STATE':<12} {'MEMORY':>8}  REASON")
            for entry in entries:
                memory = f"{entry['memory_bytes'] / 2**20:.0f} MiB" if "memory_bytes" in entry else "-"
                print(
                    f"{entry['name']:<24} {entry.get('version', '-'):<8} {entry['state']:<12} {memory:>8}  "
                    f"{entry.get('reason', '')}".rstrip()
                )
            if not entries:
                print("(the repository has no models)")
        elif args.command == "load":
            client.load(args.model)
            print(f"{args.model}: loaded")
        elif args.command == "unload":
            client.unload(args.model)
            print(f"{args.model}: unloaded")
        elif args.command == "alias" and args.alias_command == "list":
            aliases = client.aliases(args.model)["aliases"]
            if not aliases:
                print(f"{args.model}: no aliases (set one with: modelserve alias set {args.model} production VERSION)")
            for name, alias in aliases.items():
                history = " <- ".join(reversed(alias["history"]))
                print(f"{name:<16} {alias['version']:<8} {('was ' + history) if history else ''}".rstrip())
        elif args.command == "alias":
            result = client.set_alias(args.model, args.alias, args.version)
            print(f"{args.model}: {result['alias']} -> version {result['version']}")
        elif args.command == "rollback":
            result = client.rollback(args.model, args.alias)
            print(f"{args.model}: {result['alias']} rolled back to version {result['version']}")
        elif args.command == "route" and args.route_command == "show":
            print(json.dumps(client.routing(args.model), indent=2))
        elif args.command == "route" and args.route_command == "set":
            answer = client.set_routing(args.model, _policy_argument(args.policy))
            arms = [f"{arm['arm']} {arm['weight']:g} % -> {arm['target']}" for arm in answer["policy"].get("split", [])]
            print(f"{args.model}: routing set" + (f": {', '.join(arms)}" if arms else " (no split)"))
        elif args.command == "route":
            client.clear_routing(args.model)
            print(f"{args.model}: routing cleared")
    except AdminError as exc:
        print(f"modelserve {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _policy_argument(text: str) -> dict[str, Any]:
    """``route set``'s policy: inline JSON (it starts with ``{``), else a JSON or YAML file's mapping."""
    from modelserve.admin_client import AdminError

    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise AdminError(f"the inline policy is not valid JSON: {exc}") from exc
    else:
        try:
            document = yaml.safe_load(Path(text).read_text(encoding="utf-8"))
        except OSError as exc:
            raise AdminError(f"cannot read policy file {text}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise AdminError(f"policy file {text} is not valid JSON or YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise AdminError("the policy must be a mapping: {key: ..., split: [...], override: ...}")
    return document


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    tree: dict[str, dict[str, Any]] = {}

    def put(group: str, key: str, value: Any) -> None:
        if value is not None:
            tree.setdefault(group, {})[key] = value

    put("repository", "path", args.model_repository)
    put("server", "host", args.host)
    put("server", "name", args.server_name)
    put("server", "workers", args.workers)
    put("http", "port", args.http_port)
    put("grpc", "port", args.grpc_port)
    put("metrics", "port", args.metrics_port)
    put("http", "health_port", args.health_port)
    put("repository", "control_mode", args.model_control_mode)
    put("repository", "load_models", tuple(args.load_model) if args.load_model else None)
    put("repository", "poll_secs", args.repository_poll_secs)
    put("repository", "memory_budget_mb", args.memory_budget_mb)
    put("repository", "pinned_models", tuple(args.pin_model) if args.pin_model else None)
    put("repository", "unload_idle_secs", args.unload_idle_secs)
    put("repository", "load_on_demand", args.load_on_demand)
    put("scheduling", "max_queue_size", args.max_queue_size)
    put("server", "max_inflight_requests", args.max_inflight_requests)
    put("limits", "max_request_bytes", args.max_request_bytes)
    put("server", "drain_timeout_s", args.drain_timeout_s)
    return tree


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("models", "load", "unload", "alias", "rollback", "route"):
        return _run_admin(args)
    if args.command == "profile":
        return _run_profile(args)
    if args.command != "serve":
        _parser().print_help()
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(args.config, _overrides(args))
    except SettingsError as exc:
        print(f"modelserve: {exc}", file=sys.stderr)
        return 2
    from modelserve.app.workers import serve

    return serve(settings)
