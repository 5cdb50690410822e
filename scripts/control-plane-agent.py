#!/usr/bin/env python3
"""Helpers of scripts/control-plane.sh that need more than a shell.

  control-plane-agent.py compact STATE_DIR ETCD_PORT
      compacts etcd's history up to its current revision (through etcd's
      HTTP/JSON gateway, with the apiserver's client certificate) and prints
      the revision: every watch resumed from an older resourceVersion then
      gets 410 Gone.
  control-plane-agent.py serve PORT CONTROL_PLANE_SH
      an HTTP server on 127.0.0.1:PORT through which the kernel lab's guest
      (as 10.0.2.2:PORT) asks the host for what it cannot do itself:
        POST /outage?seconds=N  runs `control-plane.sh outage N` in the
                                background (202; 409 if one is running)
        GET  /outage            "idle", "running" or "done RC"
      Test fixture only: it binds to loopback and serves nothing else.
"""
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.parse
import urllib.request


def compact(state, etcd_port):
    pki = os.path.join(state, "pki")
    ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.crt"))
    ctx.load_cert_chain(os.path.join(pki, "apiserver-etcd-client.crt"),
                        os.path.join(pki, "apiserver-etcd-client.key"))

    def call(path, body):
        req = urllib.request.Request(f"https://127.0.0.1:{etcd_port}/v3/kv/{path}",
                                     data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.load(r)

    # A range read of key "\0" returns the store's current revision in its header.
    rev = call("range", {"key": "AA=="})["header"]["revision"]
    call("compaction", {"revision": rev, "physical": True})
    print(rev)


def serve(port, script):
    lock = threading.Lock()
    state = {"proc": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, code, text):
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if urllib.parse.urlsplit(self.path).path != "/outage":
                return self.reply(404, "not found")
            with lock:
                p = state["proc"]
                if p is None:
                    return self.reply(200, "idle")
                rc = p.poll()
                self.reply(200, "running" if rc is None else f"done {rc}")

        def do_POST(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path != "/outage":
                return self.reply(404, "not found")
            try:
                secs = int(urllib.parse.parse_qs(u.query).get("seconds", ["60"])[0])
            except ValueError:
                return self.reply(400, "seconds must be an integer")
            if not 0 <= secs <= 600:
                return self.reply(400, "seconds must be 0..600")
            with lock:
                p = state["proc"]
                if p is not None and p.poll() is None:
                    return self.reply(409, "an outage is already running")
                state["proc"] = subprocess.Popen([script, "outage", str(secs)],
                                                 stdin=subprocess.DEVNULL)
            self.reply(202, f"outage of {secs} s started")

        def log_message(self, fmt, *args):
            sys.stderr.write("control-plane agent: " + (fmt % args) + "\n")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    sys.stderr.write(f"control-plane agent: listening on 127.0.0.1:{port}\n")
    srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "compact":
        compact(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)
