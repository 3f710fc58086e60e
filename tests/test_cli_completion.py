"""``pipectl completion bash|zsh|fish`` prints the shell's completion script, and completion works:
the CLI called back as the scripts call it offers commands, options and choices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHELL_MARKS = {
    "bash": "complete -o nosort -F _pipectl_completion pipectl",
    "zsh": "compdef _pipectl_completion pipectl",
    "fish": "complete --no-files --command pipectl",
}


def pipectl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipectl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("shell", sorted(SHELL_MARKS))
def test_the_script_of_each_shell(shell):
    proc = pipectl("completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert "_PIPECTL_COMPLETE" in proc.stdout
    assert f"{shell}_complete" in proc.stdout  # the script asks for its shell's answers
    assert SHELL_MARKS[shell] in proc.stdout


def test_help_says_how_to_install_it():
    proc = pipectl("completion", "--help")
    assert proc.returncode == 0, proc.stderr
    assert 'eval "$(pipectl completion bash)"' in proc.stdout
    assert 'eval "$(pipectl completion zsh)"' in proc.stdout
    assert "pipectl completion fish > ~/.config/fish/completions/pipectl.fish" in proc.stdout
    assert "completion" in pipectl("--help").stdout  # listed among the commands


def test_an_unknown_shell_is_exit_2():
    proc = pipectl("completion", "tcsh")
    assert proc.returncode == 2
    assert "tcsh" in proc.stderr and "bash" in proc.stderr


def complete(words: str, cword: int, shell: str = "bash") -> list[str]:
    """What the CLI answers when the completion script calls it back."""
    proc = pipectl(
        env={
            "_PIPECTL_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_commands_complete():
    offered = complete("pipectl ru", 1)
    assert "plain,run" in offered and "plain,runs" in offered
    assert "plain,completion" in complete("pipectl compl", 1)


def test_options_of_run_complete():
    assert complete("pipectl run x.yaml --on", 3) == ["plain,--only"]
    assert complete("pipectl run x.yaml --sk", 3) == ["plain,--skip"]
    assert "plain,--format" in complete("pipectl graph x.yaml --fo", 3)


def test_choices_complete():
    assert complete("pipectl completion ", 2) == ["plain,bash", "plain,zsh", "plain,fish"]
    assert complete("pipectl graph x.yaml --format m", 4) == ["plain,mermaid"]


def test_zsh_answers_with_descriptions():
    offered = complete("pipectl run x.yaml --sk", 3, shell="zsh")
    assert offered[:2] == ["plain", "--skip"]
    assert "downstream" in offered[2]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_sourcing_the_script_completes(tmp_path):
    """The real thing: bash sources the script and runs its completion function, which calls
    ``pipectl`` (here a wrapper on PATH that runs this Python's pipectl)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pipectl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipectl "$@"\n')
    wrapper.chmod(0o755)
    script = pipectl("completion", "bash").stdout
    (tmp_path / "complete.bash").write_text(script)
    probe = (
        ". ./complete.bash\n"
        "COMP_WORDS=(pipectl ru); COMP_CWORD=1\n"
        "_pipectl_completion pipectl ru pipectl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == ["run", "runs"]
