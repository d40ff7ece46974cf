"""`flotilla keys [USER]`: the authorized_keys lines sshd may accept, at every SSH login.

sshd runs it as its AuthorizedKeysCommand (the workers' user data installs the wrapper
and sshd's settings). The question is checked (`cli.authorized_keys`), then put to the
agent's keys socket (`cli.keys_socket`), which answers from its own warm DynamoDB client;
only when no agent answers does this process read the users table itself, importing
boto3 only then. Either way the answer is a live read: a user removed or deactivated is
refused at once. Lines are printed at once, after every read succeeded: never a partial
list; when the users cannot be read nothing is printed and the exit is non-zero, so sshd
fails closed.
"""

from __future__ import annotations

from typing import Any

import click

from flotilla.cli.authorized_keys import Answer, Question, answer, question
from flotilla.cli.keys_socket import DEFAULT_PATH, ask
from flotilla.cli.options import aws_options, wiring_from


@click.command(short_help="Print the keys sshd may accept (for sshd).")
@click.argument("user_name", metavar="[USER]", required=False)
@click.option(
    "--service",
    envvar="FLOTILLA_SERVICE",
    metavar="SERVICE",
    help="The service of this instance [FLOTILLA_SERVICE]; without one only admins get in.",
)
@click.option(
    "--shared-login",
    metavar="ACCOUNT",
    help="A local account every allowed user logs in as: for USER = ACCOUNT, print all their keys.",
)
@click.option(
    "--socket",
    "socket_path",
    envvar="FLOTILLA_KEYS_SOCKET",
    default=DEFAULT_PATH,
    show_default=True,
    metavar="PATH",
    help="The agent's keys socket, asked first [FLOTILLA_KEYS_SOCKET]; without an answer "
    "the users table is read directly",
)
@aws_options
def keys(
    user_name: str | None,
    service: str | None,
    shared_login: str | None,
    socket_path: str,
    **options: Any,
) -> None:
    """Print the authorized_keys lines of the users allowed on SERVICE's instances.

    These are the keys of active users who are admins or may reach SERVICE; with
    USER, only that user's, unless USER is the --shared-login account. Meant for
    sshd, in /etc/ssh/sshd_config (the workers' user data writes this):

    \b
        AuthorizedKeysCommand /usr/local/sbin/flotilla-authorized-keys %u
        AuthorizedKeysCommandUser flotilla-keys

    sshd starts the command with an almost empty environment: the wrapper sets
    FLOTILLA_ENV, the region and FLOTILLA_SERVICE from /etc/flotilla/agent.env (and
    /etc/default/flotilla) and passes `--shared-login ops -- USER`. The agent answers
    through its keys socket when it runs; otherwise this command reads the users itself.
    An unknown USER prints nothing and exits 0 (sshd then refuses the login); when the
    users cannot be read, it prints nothing and exits non-zero, so sshd fails closed.
    """
    asked = question(user_name, service, shared_login)
    if asked is None:
        return  # no such user can exist: nothing to print
    found = ask(socket_path, asked.user, asked.service, None) if socket_path else None
    if found is None:
        found = _read_directly(options, asked)
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    if found.lines:
        click.echo("\n".join(found.lines))


def _read_directly(options: dict[str, Any], asked: Question) -> Answer:
    # sshd waits for this, not a person: botocore's own retries, no notes on stderr, and
    # none of the interactive machinery to import at every login.
    store = wiring_from(options, interactive=False).users
    return answer(store, asked)
