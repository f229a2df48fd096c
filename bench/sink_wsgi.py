"""Baseline for the upload benchmark: a WSGI app that reads the request body and discards it."""


def application(environ, start_response):
    stream = environ["wsgi.input"]
    total = 0
    while block := stream.read(1024 * 1024):
        total += len(block)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]
