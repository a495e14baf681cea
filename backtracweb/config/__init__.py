"""
The configuration: how settings are declared (L{spec}), the settings and
the file's loading and validation (L{settings}), the application's
environment, the app loaders a file may name, and the documents rendered
from the declarations.  Imports no reactor, starts no thread and imports
no application: it runs in twistd's option parsing, before the fork.
"""
