"""A local CloudTrail LookupEvents (and STS GetCallerIdentity) endpoint answering AWS's documented shapes, for the
tests and ``scripts/bench_lookup.py`` (moto does not implement LookupEvents)."""

from __future__ import annotations

import json
import re
import threading
import time
from base64 import b64decode, b64encode
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

UTC = timezone.utc
#: The account STS answers for.
ACCOUNT = "111122223333"
TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"


def event_time(rec: dict) -> datetime:
    """A record's eventTime (canonical form)."""
    return datetime.strptime(rec["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class Server:
    """State of the fake CloudTrail (and STS) endpoint: records per region, requests seen, faults to inject."""

    def __init__(self, records: dict[str, list[dict]]):
        self.records = records
        self.requests: list[dict] = []  # {"t": monotonic time, "region", "params"}
        self.throttle = 0  # answer this many next LookupEvents requests with ThrottlingException
        self.throttled = 0
        self.malformed: dict[str, str] = {}  # eventID -> CloudTrailEvent text served instead of the record
        self.lock = threading.Lock()
        self.url = ""
        self._cache: dict = {}

    def lookup(self, region: str, params: dict) -> tuple[int, dict]:
        max_results = params.get("MaxResults", 50)
        if not 1 <= max_results <= 50:
            return 400, {"__type": "InvalidMaxResultsException", "message": "MaxResults must be 1-50"}
        start = datetime.fromtimestamp(params.get("StartTime", 0), UTC)
        end = datetime.fromtimestamp(params.get("EndTime", 4e9), UTC)
        attrs = params.get("LookupAttributes") or []
        if len(attrs) > 1:
            return 400, {"__type": "InvalidLookupAttributesException", "message": "one attribute at most"}
        events = [r for t, r in self._index(region) if start <= t <= end]  # both ends inclusive
        for a in attrs:
            key = {"EventName": "eventName", "EventSource": "eventSource", "EventId": "eventID",
                   "ReadOnly": "readOnly"}[a["AttributeKey"]]
            events = [r for r in events if str(r.get(key)).lower() == a["AttributeValue"].lower()]
        events.reverse()  # newest first
        offset = 0
        if params.get("NextToken"):
            token = json.loads(b64decode(params["NextToken"]))
            if token["q"] != [params.get("StartTime"), params.get("EndTime"), attrs]:
                return 400, {"__type": "InvalidNextTokenException", "message": "token of another query"}
            offset = token["offset"]
        page = events[offset:offset + max_results]
        body: dict = {"Events": [self.event(r) for r in page]}
        if offset + max_results < len(events):
            q = [params.get("StartTime"), params.get("EndTime"), attrs]
            body["NextToken"] = b64encode(json.dumps({"q": q, "offset": offset + max_results}).encode()).decode()
        return 200, body

    def _index(self, region: str) -> list[tuple[datetime, dict]]:
        """(time, record) of a region, oldest first, cached until ``records`` is replaced."""
        if self._cache.get("records") is not self.records:
            self._cache = {"records": self.records}
        if region not in self._cache:
            recs = sorted(self.records.get(region, ()), key=lambda r: (r["eventTime"], r["eventID"]))
            self._cache[region] = [(event_time(r), r) for r in recs]
        return self._cache[region]

    def event(self, r: dict) -> dict:
        ui = r.get("userIdentity") or {}
        user = ui.get("userName") or ((ui.get("sessionContext") or {}).get("sessionIssuer") or {}).get("userName")
        return {"EventId": r["eventID"], "EventName": r["eventName"], "ReadOnly": str(r.get("readOnly")).lower(),
                "AccessKeyId": ui.get("accessKeyId", ""), "EventTime": event_time(r).timestamp(),
                "EventSource": r["eventSource"], "Username": user or ui.get("principalId", ""),
                "Resources": [{"ResourceType": x.get("type"), "ResourceName": x.get("ARN")}
                              for x in r.get("resources") or []],
                "CloudTrailEvent": self.malformed.get(r["eventID"], json.dumps(r))}


def _handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", "req-1")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if b"Action=GetCallerIdentity" in data:
                xml = (f'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                       f"<GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/auditor</Arn>"
                       f"<UserId>AIDAEXAMPLE</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult>"
                       f"<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>")
                return self.reply(200, xml.encode(), "text/xml")
            if self.headers.get("X-Amz-Target") != TARGET:
                return self.reply(400, b'{"__type": "UnknownOperationException"}', "application/x-amz-json-1.1")
            region = re.search(r"Credential=[^/]+/\d+/([^/]+)/cloudtrail/", self.headers.get("Authorization", ""))
            params = json.loads(data or b"{}")
            with server.lock:
                server.requests.append({"t": time.monotonic(), "region": region and region.group(1),
                                        "params": params})
                if server.throttle:
                    server.throttle -= 1
                    server.throttled += 1
                    status, body = 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
                else:
                    status, body = server.lookup(region.group(1) if region else "", params)
            self.reply(status, json.dumps(body).encode(), "application/x-amz-json-1.1")

    return Handler


@contextmanager
def serve(records: dict[str, list[dict]]) -> Iterator[Server]:
    """Serve ``records`` (region -> CloudTrail records) on 127.0.0.1 (``server.url``) until the block ends."""
    server = Server(records)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
