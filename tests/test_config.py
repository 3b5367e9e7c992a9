"""--config FILE.yaml: built-in defaults < YAML < command line; unknown keys and malformed files are rejected with one
line; the shipped configs/ parse; and the resolved values are what main.py records (last_args.json, run.json,
results.csv)."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

import main  # noqa: E402
from arguments import ArgError, METHOD_NAMES, parse_args  # noqa: E402


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_defaults_yaml_cli(tmp_path):
    cfg = write(tmp_path / "c.yaml", "num_epochs: 7\nlr: 1e-3\nexp_hash_len: [8, 24]\ntask: cheby\nhidden: 48\n"
                                     "tau: 0.3\nsplit: standard\n")
    log = ["--log_dir", str(tmp_path / "logs")]
    args = parse_args(["--config", str(cfg), "--num_epochs", "3", "--exp_hash_len", "16", *log])
    assert args.num_epochs == 3                 # command line beats the file
    assert args.exp_hash_len == [16]            # ... for list flags too
    assert args.lr == pytest.approx(1e-3)       # file beats the default
    assert args.hidden == 48 and args.tau == pytest.approx(0.3) and args.split == "standard"
    assert args.task == ["cheby"]               # a scalar for a list flag becomes a one-item list
    assert args.batch_size == 128 and args.k == 4  # untouched defaults
    args = parse_args([f"--config={cfg}", *log])  # the --config=FILE spelling
    assert args.num_epochs == 7 and args.exp_hash_len == [8, 24]


def test_yaml_values_are_checked_like_flags(tmp_path):
    cfg = write(tmp_path / "c.yaml", "tau: 1.5\n")
    with pytest.raises(ArgError, match="--tau 1.5"):
        parse_args(["--config", str(cfg), "--log_dir", str(tmp_path / "logs")])


@pytest.mark.parametrize("text, needle", [
    ("num_epoch: 3\n", "unknown key 'num_epoch'"),
    ("config: other.yaml\n", "unknown key 'config'"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("lr: [1, 2\n", "not valid YAML"),
    ("split: standrd\n", "invalid choice"),      # a typo must not silently run the default protocol
    ("num_epochs: 2.5\n", "invalid int"),
])
def test_bad_config_rejected(tmp_path, text, needle):
    cfg = write(tmp_path / "c.yaml", text)
    with pytest.raises(ArgError, match=needle.replace("[", r"\[")):
        parse_args(["--config", str(cfg), "--log_dir", str(tmp_path / "logs")])


def test_bad_config_is_one_line_exit_2(tmp_path, capsys):
    cfg = write(tmp_path / "c.yaml", "num_epochs: 2\nbogus_flag: 1\n")
    assert main.main(["--config", str(cfg), "--log_dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus_flag" in err[0]
    assert main.main(["--config", str(tmp_path / "missing.yaml"), "--log_dir", str(tmp_path / "logs")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("name, dataset, n_cls", [("digits", "digits", 10), ("fashion_mnist", "fashion_mnist", 10),
                                                  ("stanford_cars", "folder", 196)])
def test_shipped_configs_parse(tmp_path, name, dataset, n_cls):
    args = parse_args(["--config", str(REPO / "configs" / f"{name}.yaml"), "--log_dir", str(tmp_path / "logs")])
    assert args.dataset == dataset and args.num_cls == n_cls
    assert args.batch_size == 128 and args.tau == 0.5 and args.k == 4
    paper = name == "stanford_cars"  # the paper's setting: constant 1e-4 for 200 epochs; the others the defaults'
    assert (args.lr, args.lr_schedule, args.warmup_epochs) == ((1e-4, "constant", 0) if paper else (1e-3, "cosine", 1))
    assert args.num_epochs == {"stanford_cars": 200, "digits": 100, "fashion_mnist": 20}[name]
    if name == "stanford_cars":
        assert args.hidden == 768 and args.root_dir and args.exp_hash_len == [16, 28, 32, 64, 128]
        assert args.folds == 5 and args.knn is None  # knn = min(196 classes, batch - 1), resolved by main.py
    if name == "digits":
        assert args.method == METHOD_NAMES  # 'method: all'


def test_resolved_config_saved_with_results(tmp_path):
    cfg = write(tmp_path / "c.yaml", "method: lsh\nexp_hash_len: [8, 16]\ntopk: 77\nseed: 3\ntau: 0.4\n")
    log_dir = tmp_path / "logs"
    assert main.main(["--config", str(cfg), "--exp_hash_len", "8", "--log_dir", str(log_dir)]) == 0
    last = json.loads((log_dir / "last_args.json").read_text())["args"]
    assert last["config"] == str(cfg)
    assert (last["method"], last["exp_hash_len"], last["topk"], last["seed"], last["tau"]) == (["lsh"], [8], 77, 3, 0.4)
    assert last["knn"] == 10  # derived values are recorded resolved
    (run_dir,) = (log_dir / "runs").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["args"]["topk"] == 77 and record["settings"]["seed"] == 3 and record["settings"]["hash_len"] == 8
    with open(log_dir / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["method"], row["hash_len"], row["topk"], row["seed"], row["tau"]) == ("lsh", "8", "77", "3", "0.4")


# ----------------------------------------------------------------------------- --help names every default

def parser_of(cli, argv: list[str], monkeypatch) -> argparse.ArgumentParser:
    """The parser a CLI builds, caught when it parses `argv` (parsing itself is cut short)."""
    caught = []

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        cli(argv)
    monkeypatch.undo()
    return caught[0]


def help_strings(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """{option: its help as --help renders it} of the parser and its subcommands, for options with a default."""
    out = {}
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.update(help_strings(sub))
        elif action.option_strings and action.default not in (None, argparse.SUPPRESS) and not action.required:
            out[action.option_strings[0]] = sub_help(formatter, action)
    return out


def sub_help(formatter, action: argparse.Action) -> str | None:
    text = formatter._get_help_string(action)
    return text % {"default": action.default} if text else text


def clis():
    import data
    import embed
    import plots
    import search
    sys.path.append(str(REPO / "bench"))
    import tables
    return {"main.py": (main.main, []), "search.py": (search.main, []), "embed.py": (embed.main, []),
            "data.py pack": (data.main, ["pack"]), "plots.py": (plots.main, []),
            "bench/tables.py": (tables.main_cli, [])}


@pytest.mark.parametrize("name", ["main.py", "search.py", "embed.py", "data.py pack", "plots.py", "bench/tables.py"])
def test_help_names_every_default(name, monkeypatch):
    cli, argv = clis()[name]
    helps = help_strings(parser_of(cli, argv, monkeypatch))
    assert helps, name
    missing = {flag: text for flag, text in helps.items() if not text or "default" not in text}
    assert missing == {}, name
