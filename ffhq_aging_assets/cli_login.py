"""``ffhq-aging login``: sign in to Google once, outside every run, or check the saved sign-in.

Each setting is the file source's own (its flag, else its default: the environment variable,
the instance's settings file, the built-in value, as ``build`` and runs launched from the UI
resolve them), so the sign-in saved here is the one the runs find.
"""

from __future__ import annotations

import argparse

from ffhq_aging_assets.resources import FileSourceResource
from ffhq_aging_assets.settings import ENVIRONMENT

# The file source's settings that login takes, as flags of the same names as in ``build``.
SHARED = tuple(name for section, name in ENVIRONMENT if section == "file_source")


def add_login_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``login``."""
    for name in SHARED:
        field = FileSourceResource.model_fields[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            help=(field.description or "").replace("pydrive: ", "").replace("%", "%%"),
        )
    parser.add_argument(
        "--copy-on-quota",
        action="store_true",
        help="also ask for the drive.file scope, which copy_on_quota (--copy-on-quota of build) "
        "needs to copy an over-quota file into your Drive and delete the copy",
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="print the sign-in address instead of opening a browser, and read back the "
        "http://localhost:PORT/?code=... address the browser ends on (for SSH sessions)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="local port Google redirects the browser to [0: any free port]",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="sign in nothing: say whose the saved sign-in (or service account) is and whether "
        "Drive accepts it",
    )


def login(args: argparse.Namespace) -> int:
    """Run ``ffhq-aging login``; 0 when signed in (or, with ``--check``, when the check passed)."""
    from ffhq_aging_assets.lib.google_account import SignInError, connect, sign_in, whoami

    given = {name: getattr(args, name) for name in SHARED}
    account = FileSourceResource(
        **{name: value for name, value in given.items() if value is not None},
        copy_on_quota=args.copy_on_quota,
    ).account
    try:
        if args.check:
            connection = connect(account)
            where = (
                f"service account key {account.service_account}"
                if account.service_account
                else f"sign-in saved at {account.credentials_file}"
            )
            print(f"ffhq-aging: the {where} works: Drive answers as {whoami(connection)}")
            return 0
        if account.service_account is not None:
            print(
                f"ffhq-aging: a service account ({account.service_account}, from "
                f"--service-account or ${ENVIRONMENT['file_source', 'service_account']}) needs no "
                "sign-in; "
                "check it with `ffhq-aging login --check`"
            )
            return 2
        who = sign_in(account, open_browser=not args.no_browser, port=args.port)
    except SignInError as exc:
        print(f"ffhq-aging: {exc}")
        return 1
    print(
        f"ffhq-aging: signed in as {who}; saved to {account.credentials_file} (readable by you "
        "only). Runs with --source pydrive use it."
    )
    return 0
