"""Flask over WSGI: a page, a file upload form and a streamed response.

Serve it with ``hypercorn --config examples/flask.toml examples.flask_app:app`` (see
examples/README.md): WSGI request bodies are buffered whole, up to ``wsgi_max_body_size``,
which the config raises to 32 MiB for the upload form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request, stream_with_context

app = Flask(__name__)

FORM = """<!doctype html>
<form method="post" action="/upload" enctype="multipart/form-data">
  <input name="title"> <input type="file" name="file"> <button>Upload</button>
</form>
"""


@app.route("/")
def home() -> str:
    return FORM


@app.route("/upload", methods=["POST"])
def upload() -> Any:
    uploaded = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while chunk := uploaded.stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(title=request.form.get("title"), size=size, sha256=digest.hexdigest())


@app.route("/stream")
def stream() -> Response:
    count = request.args.get("lines", 10, type=int)

    def lines() -> Iterator[str]:
        for number in range(count):
            yield f"line {number}\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")
