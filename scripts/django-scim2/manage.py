#!/usr/bin/env python3
"""A minimal Django project serving django-scim2 (PyPI), a SCIM 2.0 server
implementation independent of scim2-server, for Tether's tests. Installed
and run by scripts/install-django-scim2.sh and tests/all/support/django_scim2.rs."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scimapp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
