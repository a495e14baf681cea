"""
A minimal Django site for the tests behind nginx (test_nginx.py): no
database, no app, two views.

  /whoami   JSON: what Django believes about the request's origin
            (REMOTE_ADDR, scheme, host, the absolute URL it would build),
            the forwarding headers it received, and the serving process's
            pid, which tells the instances apart
  /work     sleeps WORK_SECONDS in the worker thread, then answers "done":
            a request that is still in flight when a signal lands
"""
