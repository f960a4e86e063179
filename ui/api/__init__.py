"""`pixseek serve`: the library over HTTP (FastAPI), for scripts, photo managers and other apps.

serve.py    who may call it (token, Host names) and running it under uvicorn
app.py      routes and error replies
schemas.py  request and response bodies, with their bounds
guard.py    Host check, bearer token, body size limit, request metrics
backend.py  the one place that calls the search layer
metrics.py  Prometheus text format
"""
