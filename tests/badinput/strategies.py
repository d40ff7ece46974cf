"""Hypothesis strategies for what an operator (or a script gone wrong) may type or hand over."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from flotilla.engine import validation
from flotilla.engine.errors import ValidationError

METACHARACTERS = ";|&$`'\"\\<>(){}[]*?!#~ \t\n\r%^="
# What argv can really hold: no NUL (exec refuses it); undecodable bytes arrive as lone
# surrogates (Python's surrogateescape), e.g. `flotilla service show $'\xff'`.
ARGV_CHARACTERS = st.characters(
    exclude_categories=("Cs",), exclude_characters="\x00"
) | st.sampled_from(["\udcff", "\udc80"])


def refused_by(validator: Any, value: Any) -> bool:
    try:
        validator(value)
    except ValidationError:
        return True
    return False


def _no_option(text: str) -> bool:
    # A leading "-" makes click read an option (and "--help" would exit 0): tested apart.
    return not text.startswith("-")


names = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "api\n",
            "api\r\n",
            "\napi",
            "API",
            "a" * 33,
            "a" * 5000,
            "$(reboot)",
            "`id`",
            "api;rm -rf /",
            "api|cat",
            "api && true",
            "../../etc/passwd",
            "api\x1b[31m",
            "ápi",
            "ａｐｉ",
            "日本語",
            "api\udcff",
            "api\t",
            "api ",
            "api-",
            "1api",
            "a_b",
            "api\u2028",
            "api\x85",
            "NaN",
            "None",
            "null",
            "%s%n",
            "{0}",
            "*",
        ]
    ),
    st.text(ARGV_CHARACTERS, max_size=40),
    st.builds(
        lambda a, m, b: a + m + b,
        st.text("abcdefgh-", max_size=8),
        st.text(METACHARACTERS, min_size=1, max_size=4),
        st.text("abcdefgh-", max_size=8),
    ),
).filter(_no_option)

bad_service_names = names.filter(lambda n: refused_by(validation.service_name, n))
# An empty --env means "not given" (FLOTILLA_ENV, then `default`), as for every option.
bad_environment_names = names.filter(
    lambda n: n != "" and refused_by(validation.environment_name, n)
)
any_text = st.text(ARGV_CHARACTERS, max_size=60).filter(_no_option)

bad_weights = st.one_of(
    st.sampled_from(["-1", "1.5", "1e3", "ten", "", " ", "٣", "1000001", "99" * 30, "0x10", "+5"]),
    st.text(ARGV_CHARACTERS, max_size=10).filter(
        lambda w: refused_by(lambda v: validation.weight("v", v), w)
    ),
)

bad_numbers = st.one_of(
    st.sampled_from(
        ["", "nan", "NaN", "inf", "-inf", "-1", "0", "1e309", "9" * 400, "abc", "1,5", "0x1"]
    ),
    st.text(ARGV_CHARACTERS, max_size=12),
).filter(_no_option)

# --- revision sources -----------------------------------------------------------------

GOOD_UNIT = b"[Unit]\nDescription=web\n[Service]\nExecStart=/usr/bin/web\n"
SENTINEL = "sentinel-env-VALUE-9f3a"  # an env value: must never appear in an error


def _with(junk: bytes) -> Any:
    return st.tuples(st.binary(max_size=120), st.binary(max_size=120)).map(
        lambda parts: parts[0] + junk + parts[1]
    )


binary_garbage = st.one_of(*(_with(j) for j in (b"\x00", b"\xff", b"\xc3\x28", b"\xed\xa0\x80")))

unit_without_section = (
    st.lists(
        st.tuples(st.text("ABCXYZabc", min_size=1, max_size=8), st.text(max_size=30)).map(
            lambda kv: f"{kv[0]}={kv[1]}".replace("\x00", "")
        ),
        max_size=6,
    )
    .map(lambda lines: "\n".join(lines))
    .filter(lambda t: not any(line.strip().startswith("[") for line in t.splitlines()))
)

# The bad character is never last: a trailing ASCII blank before `=` is trimmed, as
# systemd's EnvironmentFile= parser does, so `K =v` is a valid line setting K.
bad_env_keys = st.builds(
    lambda a, bad, b: "K" + a + bad + b,
    st.text("ABC_9", max_size=5),
    st.sampled_from([*list("-. $;`'\"(é!/"), "\xa0"]),
    st.text("ABC_9", min_size=1, max_size=5),
)


def _file(name: str, data: bytes | str) -> tuple[str, bytes]:
    return (name, data.encode() if isinstance(data, str) else data)


bad_file_names = st.builds(
    lambda a, bad, b, suffix: a + bad + b + suffix,
    st.text("abcxyz019", min_size=1, max_size=10),
    st.sampled_from([*list(" ;|&$`'\"\\<>(){}[]*?!#~%^=,+é日"), "\n", "\t", "\u2028", "\x7f"]),
    st.text("abcxyz", max_size=10),
    st.sampled_from([".service", ".env", ".timer", ""]),
)

# One ingredient a revision must refuse, as (file name, content).
bad_ingredients = st.one_of(
    binary_garbage.map(lambda b: _file("web.service", b)),
    binary_garbage.map(lambda b: _file("web.env", b)),
    unit_without_section.map(lambda t: _file("web.service", t)),
    st.just(_file("web.service", "[Service\nExecStart=/bin/true\n")),
    st.just(_file("web.service", "[Service]\njust words\n")),
    st.just(_file("web.env", b"A=" + b"x" * (65 * 1024))),  # over 64 KB
    st.just(_file("web.env", "A=" + "x" * (33 * 1024))),  # a value over 32 KB
    st.builds(lambda k: _file("web.env", f"{k}={SENTINEL}\n"), bad_env_keys),
    st.just(_file("web.env", f"PASSWORD='{SENTINEL}\n")),  # quote never closed
    st.just(_file("web.env", f"{SENTINEL}\n")),  # no '='
    st.just(_file("other.env", f"A={SENTINEL}\n")),  # no other.service
    st.just(_file("cache.env", "DOCKER_IMAGE=$(reboot)\n")),
    st.just(_file("cache.env", "DOCKER_IMAGE=redis:7\nDOCKER_PORT_99999=80\n")),
    st.just(_file("cache.env", "DOCKER_IMAGE=redis:7\nDOCKER_LOG_DRIVER=json file\n")),
    st.just(_file("cache.env", f"DOCKER_IMAGE=redis:7\nDOCKER_VOLUME_A={SENTINEL}:/data\n")),
    st.just(_file("cache.env", f"DOCKER_IMAGE=redis:7\nDOCKER_TOKEN={SENTINEL}\n")),  # unknown
    st.just(_file("cache.env", f"DOCKER_IMAGE=redis:7\nFLOTILLA_IMAGE={SENTINEL}\n")),
    st.just(_file("notes.txt", "hello")),
    st.just(_file("web.mount", "[Mount]\nWhat=/dev/sda\n")),
    st.just(_file("x" * 200 + ".service", GOOD_UNIT)),
    bad_file_names.map(lambda n: _file(n, GOOD_UNIT)),
)

revision_files = st.tuples(
    st.lists(bad_ingredients, min_size=1, max_size=3),
    st.booleans(),  # with a good web.service beside the bad ingredients
).map(lambda drawn: ([_file("web.service", GOOD_UNIT)] if drawn[1] else []) + drawn[0])
