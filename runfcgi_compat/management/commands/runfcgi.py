"""``manage.py runfcgi key=value ...``: Django 1.8's command, restored.

The options are 1.8's key=value words, not ``--flags``, so a 1.8 command
line works unchanged; ``runfcgi help`` and ``manage.py help runfcgi`` both
list them, from the same table that parses them.
"""
import argparse

from django.core.management.base import (
    BaseCommand,
    CommandError,
    DjangoHelpFormatter,
    SystemCheckError,
)

from ... import fastcgi, options, runner
from ...errors import StartupError
from ...servers import memory


class HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the option table's own line breaks in ``manage.py help runfcgi``."""


class Command(BaseCommand):
    help = "Runs this project as a FastCGI, SCGI or AJP application (via flup)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", fastcgi.FASTCGI_HELP)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def check(self, *args, **kwargs):
        """Django's system checks, as every command runs them (``--skip-checks``
        skips them), but in a child process that exits after: what they
        build and drop would stay in the prefork master's memory, where
        every worker would copy the pages around it (servers/memory.py).
        Warnings are printed, errors stop the start, as in Django."""
        failed = memory.run_apart(lambda: super(Command, self).check(*args, **kwargs))
        if failed is None:
            return
        name, text = failed
        if name == "SystemCheckError":
            raise SystemCheckError(text)
        raise CommandError(f"the system checks failed: {name}: {text}")

    def add_arguments(self, parser):
        parser.add_argument(
            "words", nargs="*", metavar="key=value",
            help="Options as in Django 1.8, e.g. host=127.0.0.1 port=3033; "
                 "'help' lists them.",
        )

    def handle(self, *args, **kwargs):
        words = list(kwargs["words"]) + list(args)
        if fastcgi.wants_help(words):
            self.stdout.write(fastcgi.FASTCGI_HELP, ending="")
            return
        try:
            parsed = options.parse_words(words)
            runner.run(parsed, stdout=self.stdout, verbosity=kwargs["verbosity"])
        except (options.OptionError, StartupError) as exc:
            raise CommandError(str(exc)) from None
