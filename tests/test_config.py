"""Config loading: defaults, overrides, and one clear line for every kind of bad input."""

from __future__ import annotations

import tomllib

import msgspec
import pytest

from soc_async import config as cfg
from soc_async.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    """The dumped effective config loads back to the same config."""
    path = tmp_path / "c.toml"
    default = cfg.RunConfig()
    path.write_text(cfg.dump(default))
    assert cfg.load(path) == default


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("[targets]\nchats = 'many'\n", "targets.chats", "expected `int`"),
        ("[targets]\nchatz = 3\n", "targets.chatz", "unknown key"),
        ("bogus = 1\n", "bogus", "unknown key"),
        ("[chat]\ninstant_event_p = 1.5\n", "chat.instant_event_p", "<= 1.0"),
        ("[calls.turn]\ntemperature = -1\n", "calls.turn.temperature", ">= 0.0"),
        ("[concurrency]\nmin = 10\nmax = 5\n", "concurrency.min", "<= concurrency.max"),
        ("[chat]\nfold = 30\n", "chat.fold", "< chat.active_window"),
        ("[chat]\nstart_date = '15.03.2026'\n", "chat.start_date", "ISO date"),
        ("shard = '3/2'\n", "shard", "0 <= i < n"),
        ("endpoints = ['localhost:8000']\n", "endpoints", "http(s)://"),
        ("[targets\n", "", "not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, toml, key, expected):
    """Each bad config raises one line naming the file, the key and what was expected."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        cfg.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert key in message
    assert expected in message
    assert info.value.exit_code == 2


def test_missing_file_is_a_config_error(tmp_path):
    """A config path that does not exist is named in the error."""
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        cfg.load(tmp_path / "nope.toml")


def test_override_applies_dotted_keys_and_revalidates():
    """Flags override the file; an out-of-range flag is refused like a file value."""
    base = cfg.RunConfig()
    changed = cfg.override(base, {"targets.chats": 2, "concurrency.fixed": 16, "seed": None})
    assert changed.targets.chats == 2
    assert changed.concurrency.fixed == 16
    assert changed.seed == base.seed
    with pytest.raises(ConfigError, match=r"concurrency\.fixed"):
        cfg.override(base, {"concurrency.fixed": 0})


def test_api_key_is_not_dumped(monkeypatch):
    """The effective config never shows the API key."""
    monkeypatch.setenv("SOC_ASYNC_API_KEY", "sekrit")
    loaded = cfg.load(None)
    assert loaded.api_key == "sekrit"
    assert "sekrit" not in cfg.dump(loaded)


def test_partial_call_table_keeps_the_kinds_other_defaults(tmp_path):
    """Setting one key of [calls.turn] leaves that kind's other defaults as they were."""
    path = tmp_path / "c.toml"
    path.write_text("[calls.turn]\nretries = 5\n[calls.summary]\nmax_tokens = 99\n")
    loaded = cfg.load(path)
    assert loaded.calls.turn.retries == 5
    assert loaded.calls.turn.max_tokens == cfg.RunConfig().calls.turn.max_tokens
    assert loaded.calls.summary.temperature == cfg.RunConfig().calls.summary.temperature
    assert loaded.calls.summary.max_tokens == 99


def test_concurrency_bounds_are_per_engine_by_default() -> None:
    """No total and no per-engine bound by default (the engines size them); a per-engine
    bound below 1 is refused; initial is checked against max only when max is set."""
    default = cfg.RunConfig()
    assert default.concurrency.max is None and default.concurrency.per_engine is None
    assert cfg.from_dict({"concurrency": {"initial": 5000}}).concurrency.initial == 5000
    with pytest.raises(ConfigError, match=r"concurrency\.per_engine"):
        cfg.from_dict({"concurrency": {"per_engine": 0}})
    with pytest.raises(ConfigError, match=r"concurrency\.initial.*concurrency\.max \(64\)"):
        cfg.from_dict({"concurrency": {"max": 64, "initial": 128}})


def test_chat_template_kwargs_default_to_thinking_off_and_survive_a_dump() -> None:
    """Every call kind turns thinking off by default; a kind's own table replaces it and
    reads back the same from the dumped config.toml."""
    default = cfg.RunConfig()
    for kind in cfg.CALL_KINDS:
        assert default.call(kind).chat_template_kwargs == {"enable_thinking": False}
    changed = cfg.override(default, {"calls.summary.chat_template_kwargs": {}})
    again = cfg.from_dict(tomllib.loads(cfg.dump(changed)))
    assert again.calls.summary.chat_template_kwargs == {}
    assert again.calls.turn.chat_template_kwargs == {"enable_thinking": False}


def test_servers_on_the_command_line_replace_those_of_a_resumed_run(tmp_path) -> None:
    """A requeued job resumes with its new engines: --endpoints-file replaces the URLs
    saved in the run's config.toml (another job's ports), and --endpoint replaces a saved
    endpoints file, so no dead server is waited for."""
    from soc_async.cli import build_parser
    from soc_async.commands.generate import resolve_config

    run = tmp_path / "run"
    run.mkdir()
    saved = cfg.override(
        cfg.RunConfig(), {"endpoints": ["http://127.0.0.1:20000"], "endpoints_file": "old.json"}
    )
    (run / "config.toml").write_text(cfg.dump(saved))
    parse = build_parser().parse_args
    fresh = resolve_config(parse(["run", "--resume", str(run), "--endpoints-file", "new.json"]))
    assert fresh.endpoints == [] and fresh.endpoints_file == "new.json"
    named = resolve_config(parse(["run", "--resume", str(run), "--endpoint", "http://h:1"]))
    assert named.endpoints == ["http://h:1"] and named.endpoints_file == ""


# --- profiles -------------------------------------------------------------------------------


def test_embedded_profile_layers_under_the_file(tmp_path):
    """profile = "embedded-cpu" brings its bounded grammars and short chats; keys the file
    sets itself win over the profile's."""
    path = tmp_path / "c.toml"
    path.write_text('profile = "embedded-cpu"\n[chat]\nmax_turns = 12\n')
    loaded = cfg.load(path)
    assert loaded.calls.persona.grammar_bounds == "max_tokens"
    assert loaded.calls.experience.grammar_bounds == "max_tokens"
    assert loaded.chat.max_turns == 12
    default = cfg.RunConfig()
    assert default.calls.persona.grammar_bounds == "shape"
    saved = tmp_path / "saved.toml"
    saved.write_text(cfg.dump(loaded))
    assert cfg.load(saved) == loaded  # what a run directory keeps reads back the same


def test_unknown_profile_is_a_config_error(tmp_path):
    """A profile name that is not shipped is refused with the known names."""
    path = tmp_path / "c.toml"
    path.write_text('profile = "tiny"\n')
    with pytest.raises(ConfigError, match=r"profile.*embedded-cpu"):
        cfg.load(path)


@pytest.mark.parametrize(
    ("argv", "toml", "profile"),
    [
        (["run"], None, "embedded-cpu"),
        (["run", "--endpoint", "http://127.0.0.1:8000"], None, "default"),
        (["run"], 'endpoints = ["http://127.0.0.1:8000"]\n', "default"),
        (["run"], '[server]\nmodel = "Qwen/Qwen3-8B"\n', "default"),
        (["run"], "[targets]\nchats = 2\n", "embedded-cpu"),
        (["run"], 'profile = "default"\n', "default"),
        (["run", "--endpoint", "http://127.0.0.1:8000"], 'profile = "embedded-cpu"\n',
         "embedded-cpu"),
    ],
)  # fmt: skip
def test_the_embedded_profile_is_chosen_only_for_the_embedded_server(tmp_path, argv, toml, profile):
    """A new run whose config names no profile gets embedded-cpu only when it will start
    the embedded server; a profile the file names is kept."""
    from soc_async.cli import build_parser
    from soc_async.commands.generate import resolve_config

    if toml is not None:
        path = tmp_path / "c.toml"
        path.write_text(toml)
        argv = [*argv, "--config", str(path)]
    args = build_parser().parse_args(argv)
    resolved = resolve_config(args)
    assert resolved.profile == profile
    assert (resolved.calls.persona.grammar_bounds == "max_tokens") == (profile == "embedded-cpu")


# --- one config per command: soc_async.config.resolve ----------------------------------


@pytest.mark.parametrize(
    ("argv", "profile", "embedded"),
    [
        (["bench"], "embedded-cpu", True),
        (["bench", "--endpoint", "http://127.0.0.1:8000"], "default", False),
        (["bench", "--endpoints-file", "e.json"], "default", False),
    ],
)
def test_the_bench_config_is_resolved_once_with_its_profile(argv, profile, embedded) -> None:
    """The bench resolves its config through the same function as run: the embedded
    profile only for the embedded server, the turn count from the CPU plan there."""
    from soc_async.bench import session, sizing
    from soc_async.cli import build_parser

    resolved = session._config(build_parser().parse_args(argv))
    assert resolved.profile == profile
    assert session.embedded_cpu(resolved) == embedded
    turns = sizing.CPU_TURNS if embedded else session.DEFAULT_TURNS
    assert resolved.chat.max_turns == turns
    again = session._config(build_parser().parse_args([*argv, "--max-turns", "3"]))
    assert again.chat.max_turns == 3 and again.profile == profile


@pytest.mark.parametrize(
    ("flags", "profile"),
    [
        ([], "embedded-cpu"),
        (["--endpoint", "http://127.0.0.1:8000"], "default"),
        (["--endpoints-file", "e.json", "--ready-timeout", "7"], "default"),
    ],
)
def test_the_judge_config_is_resolved_once_with_every_server_flag(
    tmp_path, monkeypatch, flags, profile
) -> None:
    """report --judge resolves its config like run (profile included) and uses every
    server flag it registers: --endpoints-file and --ready-timeout too."""
    from soc_async.cli import build_parser
    from soc_async.commands import report
    from soc_async.run import app
    from soc_async.store import RUN, RunIdentity

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN).write_bytes(msgspec.json.encode(RunIdentity.new(5)))
    seen: list[cfg.RunConfig] = []
    monkeypatch.setattr(app, "with_gateway", lambda config, work: seen.append(config))
    args = build_parser().parse_args(["report", str(run), "--judge", "1", *flags])
    report._judge(args, run, tmp_path, 0)
    (resolved,) = seen
    assert resolved.profile == profile
    if "--endpoints-file" in flags:
        assert resolved.endpoints_file == "e.json" and resolved.client.ready_timeout_s == 7
    assert resolved.endpoints == [f for f in flags if f.startswith("http")]


def test_resolve_takes_a_function_of_the_profiled_config() -> None:
    """Changes given as a function are made from the config under its profile."""
    calls: list[str] = []

    def changes(base: cfg.RunConfig) -> dict[str, object]:
        calls.append(base.profile)
        return {"seed": 4}

    resolved = cfg.resolve(None, changes)
    assert resolved.seed == 4 and resolved.profile == "embedded-cpu"
    assert calls[-1] == "embedded-cpu"
