#!/usr/bin/env python
"""The sample project whose own tests run through runfcgi_compat.testing."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
