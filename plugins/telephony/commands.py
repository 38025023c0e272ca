"""``crm telephony ...`` commands: ``crm telephony listen``, the Asterisk (AMI) listener."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import click


def _helpers() -> Any:
    import cli  # the top-level module: imported lazily (it imports the plugins' commands)

    return cli


class _Echo(logging.Handler):
    """The plugin's log lines on standard error, as the command's own output."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


def register(cli: Any) -> None:
    """Add the telephony commands to the ``crm`` command line."""

    @cli.group()
    def telephony() -> None:
        """Telephony: the Asterisk listener (crm telephony listen)."""

    @telephony.command()
    @click.option("--once", is_flag=True, help="Exit when Asterisk closes the connection instead of reconnecting.")
    @click.pass_obj
    def listen(obj: Any, once: bool) -> None:
        """Record Asterisk's calls: keep one AMI connection open until interrupted (Ctrl+C).

        Run one listener per deployment beside `crm serve` (e.g. as a systemd service):
        Asterisk sends each event to every connection, so a listener in each web worker would
        record every event once per worker. It logs in with the ami_* settings of
        [plugin.telephony] and reconnects after a drop.
        """
        from .providers.asterisk import AmiError, listen as run_listener

        helpers = _helpers()

        async def run(dep: Any) -> Any:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
                    pass
            click.echo(f"Listening to Asterisk for {obj.path.resolve()} (Ctrl+C to stop)")
            return await run_listener(dep, stop, once=once)

        logger = logging.getLogger("plugins.telephony")
        handler, level = _Echo(), logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            done = helpers.with_deployment(obj.path, run)
        except AmiError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        click.echo(f"Stopped: {done.events} AMI event{'s' if done.events != 1 else ''} read, "
                   f"{done.calls} call{'s' if done.calls != 1 else ''} recorded")
