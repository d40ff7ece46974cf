"""On a worker, the instance metadata service (and so the instance role) is reachable only
by root (the agent) and flotilla-keys (`flotilla keys`, sshd's AuthorizedKeysCommandUser).

The rules are the very files the workers' user data installs (cli/flotilla-imds-firewall.nft
and .service), applied for real with nft, in a fresh network namespace made for the test:
never in the host's own. In it, the metadata address lives in a namespace of its own, routed
to as on EC2, and a "container" namespace reaches it through this one (forwarded).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from flotilla.engine.unit_syntax import unit_settings
from tests.unit.test_user_data import worker_script

SHIPPED = Path(__file__).resolve().parents[2] / "cli"
RULES = SHIPPED / "flotilla-imds-firewall.nft"
UNIT = SHIPPED / "flotilla-imds-firewall.service"
PYTHON = "/usr/bin/python3"  # the distribution's: other users may run it
KEYS_UID = 990

# Runs as root in the fresh network and mount namespaces: the test's "host".
WORLD = r"""
set -eu
rules=$1 python=$2 keys_uid=$3 work=$4 probe=$5
# flotilla-keys, as the user data makes it, seen only inside this mount namespace.
cp /etc/passwd "$work/passwd"
echo "flotilla-keys:x:$keys_uid:$keys_uid::/nonexistent:/usr/sbin/nologin" >> "$work/passwd"
mount --bind "$work/passwd" /etc/passwd
ip link set lo up
unshare -n sleep 120 & imds=$!
unshare -n sleep 120 & box=$!
server=""
trap 'kill $imds $box $server 2>/dev/null || true' EXIT
until [ "$(readlink /proc/$imds/ns/net)" != "$(readlink /proc/self/ns/net)" ] \
  && [ "$(readlink /proc/$box/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
ip link add to-imds type veth peer name eth0 netns $imds
ip link add to-box type veth peer name eth0 netns $box
ip addr add 10.0.1.1/24 dev to-imds; ip link set to-imds up
ip addr add 10.0.2.1/24 dev to-box; ip link set to-box up
ip -6 addr add fd01::1/64 dev to-imds nodad
ip route add 169.254.169.254/32 via 10.0.1.2
ip -6 route add fd00:ec2::254/128 via fd01::2
echo 1 > /proc/sys/net/ipv4/ip_forward
nsenter -t $imds -n sh -c 'ip link set lo up; ip link set eth0 up
  ip addr add 10.0.1.2/24 dev eth0; ip -6 addr add fd01::2/64 dev eth0 nodad
  ip addr add 169.254.169.254/32 dev lo; ip -6 addr add fd00:ec2::254/128 dev lo nodad
  ip route add default via 10.0.1.1; ip -6 route add default via fd01::1'
nsenter -t $box -n sh -c 'ip link set lo up; ip link set eth0 up
  ip addr add 10.0.2.2/24 dev eth0; ip route add default via 10.0.2.1'
nsenter -t $imds -n "$python" -c "$probe" serve >/dev/null 2>&1 & server=$!
"$python" -c "$probe" wait
as() { label=$1; shift; "$@" "$python" -c "$probe" "$label"; }
for uid in 65534 1000; do
  as "before uid=$uid" setpriv --reuid=$uid --regid=$uid --clear-groups
done
as "before container-root" nsenter -t $box -n
nft -f "$rules"
nft -f "$rules"
echo "tables: $(nft list tables | tr '\n' ' ')"
for uid in 0 $keys_uid 65534 1000; do
  as "uid=$uid" setpriv --reuid=$uid --regid=$uid --clear-groups
done
as "container-root" nsenter -t $box -n
"""

PROBE = r"""
import socket, sys, time
ADDRESSES = [("169.254.169.254", socket.AF_INET), ("fd00:ec2::254", socket.AF_INET6)]
if sys.argv[1] == "serve":
    servers = []
    for address, family in ADDRESSES:
        server = socket.socket(family)
        server.bind((address, 80))
        server.listen()
        servers.append(server)
    while True:
        for server in servers:
            server.settimeout(0.05)
            try:
                server.accept()[0].close()
            except OSError:
                pass
elif sys.argv[1] == "wait":  # until the listener is up (root, before any rule)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("169.254.169.254", 80), timeout=1).close()
            sys.exit(0)
        except OSError:
            time.sleep(0.02)
    sys.exit("the fake metadata service did not come up")
else:
    for address, family in ADDRESSES:
        if family == socket.AF_INET6 and "container" in sys.argv[1]:
            continue  # the container namespace has IPv4 only
        client = socket.socket(family)
        client.settimeout(10)
        try:
            client.connect((address, 80))
            print(sys.argv[1], address, "connected")
        except OSError as error:
            print(sys.argv[1], address, "refused:", error.strerror)
"""


def test_the_user_data_installs_the_shipped_rules_and_starts_them_before_the_agent() -> None:
    script = worker_script()
    [keys_user] = re.findall(r"AuthorizedKeysCommandUser (\S+)", script)
    assert keys_user == "flotilla-keys"
    assert f'meta skuid != {{ 0, "{keys_user}" }}' in RULES.read_text()
    lines = [line.strip() for line in script.splitlines()]
    installed = lines.index(
        'install -m 0644 "$shipped/flotilla-imds-firewall.nft" /etc/flotilla/imds-firewall.nft'
    )
    [made] = [n for n, line in enumerate(lines) if line.startswith("id -u flotilla-keys ")]
    assert made < installed  # nft resolves the user's name when it loads the rules
    started = lines.index("systemctl start flotilla-imds-firewall \\")
    assert installed < lines.index("systemctl enable flotilla-imds-firewall") < started
    assert started < lines.index("systemctl start flotilla-agent \\")
    settings = {(section, key): value for section, key, value in unit_settings(UNIT.read_text())}
    assert settings["Service", "ExecStart"] == "/usr/sbin/nft -f /etc/flotilla/imds-firewall.nft"
    assert "flotilla-agent.service" in settings["Unit", "Before"].split()
    assert settings["Install", "RequiredBy"] == "flotilla-agent.service"


def test_the_unit_is_one_systemd_accepts() -> None:
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""


def test_only_root_and_flotilla_keys_reach_the_metadata_service(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("run the tests as root: a network namespace needs it", pytrace=False)
    assert Path(PYTHON).exists(), f"{PYTHON} is missing: ./scripts/setup installs python3"
    world = subprocess.run(
        [
            *("unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", WORLD),
            *("sh", str(RULES), PYTHON, str(KEYS_UID), str(tmp_path), PROBE),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert world.returncode == 0, world.stdout + world.stderr
    seen = world.stdout.splitlines()
    v4, v6 = "169.254.169.254", "fd00:ec2::254"
    # Without the rules, anyone reaches it: the refusals below are the rules' doing.
    for who in ("before uid=65534", "before uid=1000"):
        assert f"{who} {v4} connected" in seen
        assert f"{who} {v6} connected" in seen
    assert f"before container-root {v4} connected" in seen
    assert "tables: table inet flotilla_imds " in seen  # applied twice, still one table
    for uid in (0, KEYS_UID):
        assert f"uid={uid} {v4} connected" in seen
        assert f"uid={uid} {v6} connected" in seen
    for uid in (65534, 1000):
        assert f"uid={uid} {v4} refused: No route to host" in seen
        assert f"uid={uid} {v6} refused: Permission denied" in seen  # ICMPv6's wording
    # Forwarded from a container on a bridge network, even as root: refused.
    assert f"container-root {v4} refused: No route to host" in seen
