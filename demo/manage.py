#!/usr/bin/env python3
"""
Django's command line for the demo site: migrate, collectstatic,
createsuperuser.  Run it as `python demo/manage.py ...` from anywhere: Python
puts this directory, which holds the demosite package, first on sys.path.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demosite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
