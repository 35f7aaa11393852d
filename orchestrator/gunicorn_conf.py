"""gunicorn settings for the API (docs/deployment.md, "Serving the API"):
`gunicorn -c orchestrator/gunicorn_conf.py orchestrator.wsgi`. Every value can be moved by environment.

A send is short and mostly Python (a handful of statements on a local PostgreSQL): processes, one per core
and one more, are what scale it; a second thread per process lets one request run Python while another
waits on the database. gthread keeps client connections alive between requests (the sync worker closes
every one). Each thread holds its own persistent database connection (CONN_MAX_AGE), so the database sees
workers x threads connections per host.
"""

import multiprocessing
import os

bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", multiprocessing.cpu_count() + 1))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "2"))
# Clients (services calling the API) reuse their connections: keep them a little longer than the default
# 2 s, below a load balancer's idle timeout (60 s on most).
keepalive = int(os.environ.get("WEB_KEEPALIVE", "30"))
# No periodic worker recycling: bench/http_send.py measures no growth over 100k requests. Set
# WEB_MAX_REQUESTS only if your own measurements show memory growing.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 30
# Import the application once in the master; workers fork with it loaded (faster starts, shared pages).
preload_app = True
accesslog = os.environ.get("WEB_ACCESS_LOG") or None  # "-" for stdout; off by default (a write per request)
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
