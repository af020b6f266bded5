"""The serving image runs as a non-root user (static check of the Dockerfile; docker/verify.sh
checks it at run time with ``id -u`` inside the built image), and its network default needs the
admin token."""

from __future__ import annotations

import re
import shlex

from tests.serving.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def test_the_image_runs_as_a_non_root_user() -> None:
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))
    users = [args for word, args in stage if word == "USER"]
    assert users, "the runtime stage has no USER: the server would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0", ""} and group not in {"root", "0"}, users[-1]
    # The user is created in this stage with a non-zero uid; USER is the last word on it and the
    # default command comes after it.
    created = [shlex.split(args) for word, args in stage if word == "RUN" and "useradd" in args]
    assert created, "the USER is not created in the runtime stage"
    useradd = created[-1][created[-1].index("useradd") :]
    assert user in useradd and int(useradd[useradd.index("--uid") + 1]) > 0, useradd
    last_user = max(i for i, (word, _) in enumerate(stage) if word == "USER")
    assert any(word == "CMD" for word, _ in stage[last_user + 1 :]), "CMD must come after USER"


def test_the_image_listens_on_the_network_only_with_a_token() -> None:
    """The image's default host is 0.0.0.0, so `basketcast serve` needs BASKETCAST_ADMIN_TOKEN there:
    the image sets no token of its own, and the README says to pass one."""
    stage = _final_stage(_instructions(DOCKERFILE.read_text()))
    env = " ".join(args for word, args in stage if word == "ENV")
    assert "BASKETCAST_HOST=0.0.0.0" in env
    assert "BASKETCAST_ADMIN_TOKEN" not in env  # never baked into an image
    cmd = next(args for word, args in reversed(stage) if word == "CMD")
    assert "basketcast serve" in cmd and "$BASKETCAST_HOST" in cmd
    readme = (REPO / "README.md").read_text()
    serving = readme[readme.index("## Serving") : readme.index("\n## ", readme.index("## Serving") + 5)]
    assert re.search(r"docker run [^\n]*-e BASKETCAST_ADMIN_TOKEN", serving), "README: docker run without a token"
