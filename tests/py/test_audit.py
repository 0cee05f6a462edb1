"""The audit log as a log pipeline and an auditor see it (docs/HTTP.md,
"Audit log"): ECS fields with dotted keys, the SHA-256 chain checked here
independently and by `strata audit verify` (removed, edited, swapped and
inserted lines each name the line), watermarked exports from
GET /admin/audit (reader id + HMAC-SHA256, checked here and by
`strata audit verify --hmac-key`), who may read them, and retention and
rotation at start-up."""
import datetime
import hashlib
import hmac
import json
import os
import re
import subprocess

import pytest

from test_http_common import BIN, Server, need_model

requests = pytest.importorskip("requests")

GENESIS = "0" * 64
PROMPT = "the auditors are watching"
WM_SUFFIX = re.compile(rb',"strata\.export\.reader_id":"([^"\\]*)",'
                       rb'"strata\.export\.hmac_sha256":"([0-9a-f]{64})"\}$')


def add_key(path, kid, role):
    extra = ["--allow", "127.0.0.0/8,::1/128"] if role == "developer" else []
    out = subprocess.run([BIN, "keys", "add", "--file", str(path), "--role", role, "--id", kid,
                          *extra], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[0]


def h(key):
    return {"Authorization": "Bearer " + key}


def verify(*args):
    return subprocess.run([BIN, "audit", "verify", *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def lines_of(path):
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path, lines):
    path.write_bytes(b"".join(l + b"\n" for l in lines))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    need_model()
    d = tmp_path_factory.mktemp("audit_keyed")
    kf = d / "keys.txt"
    keys = {r: add_key(kf, r + "1", r) for r in ("developer", "user", "auditor")}
    audit = d / "audit.ndjson"
    s = Server("--keys", str(kf), "--audit-log", str(audit))
    s.keys, s.audit, s.dir = keys, audit, d
    # some traffic: a generation, a refusal, a listing
    r = requests.post(s.url + "/v1/completions", headers=h(keys["user"]),
                      json={"prompt": PROMPT, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert requests.get(s.url + "/v1/models").status_code == 401
    assert requests.get(s.url + "/v1/models", headers=h(keys["developer"])).status_code == 200
    for _ in range(4):
        assert requests.get(s.url + "/health").status_code == 200
    yield s
    rc, out, err = s.stop()
    assert rc == 0, err


def test_ecs_fields_and_types(keyed):
    text = keyed.audit.read_text()
    assert PROMPT not in text
    recs = [json.loads(l) for l in text.splitlines()]
    assert len(recs) >= 7
    ts_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    for r in recs:
        # dotted keys throughout: no nested objects (Filebeat's expand_keys nests them)
        assert all(not isinstance(v, dict) for v in r.values()), r
        assert ts_re.match(r["@timestamp"]), r
        assert isinstance(r["ecs.version"], str) and r["ecs.version"].startswith("8.")
        assert r["event.kind"] == "event" and r["event.category"] == ["web"]
        code = r["http.response.status_code"]
        assert isinstance(code, int)
        assert r["event.outcome"] == ("success" if code < 400 else "failure")
        assert isinstance(r["event.duration"], int) and r["event.duration"] >= 0
        assert r["client.ip"] == "127.0.0.1" and isinstance(r["client.port"], int)
        assert r["http.request.method"] in ("GET", "POST")
        assert isinstance(r["url.path"], str) and r["url.path"].startswith("/")
        assert isinstance(r["http.response.body.bytes"], int)
        assert isinstance(r["strata.request.id"], str) and r["strata.request.id"]
        assert isinstance(r["strata.audit.seq"], int)
        assert re.fullmatch(r"[0-9a-f]{64}", r["strata.audit.prev_sha256"])
    ids = [r["strata.request.id"] for r in recs]
    assert len(set(ids)) == len(ids)
    gen = [r for r in recs if r.get("strata.prompt_sha256") ==
           hashlib.sha256(PROMPT.encode()).hexdigest()]
    assert len(gen) == 1
    g = gen[0]
    assert g["user.id"] == "user1" and g["user.roles"] == ["user"]
    assert g["url.path"] == "/v1/completions" and g["event.outcome"] == "success"
    assert isinstance(g["strata.model"], str) and g["strata.model"]
    assert g["strata.completion_tokens"] == 2 and g["strata.prompt_tokens"] > 0
    # a refused request: failure, no user
    refused = [r for r in recs if r["http.response.status_code"] == 401]
    assert refused and all("user.id" not in r for r in refused)
    assert refused[0]["event.outcome"] == "failure"
    # non-generation requests carry no token counts
    health = [r for r in recs if r["url.path"] == "/health"]
    assert health and all("strata.prompt_tokens" not in r for r in health)


def test_chain_is_sha256_of_previous_line(keyed):
    raw = lines_of(keyed.audit)
    recs = [json.loads(l) for l in raw]
    assert recs[0]["strata.audit.seq"] == 1 and recs[0]["strata.audit.prev_sha256"] == GENESIS
    for i in range(1, len(raw)):
        assert recs[i]["strata.audit.seq"] == recs[i - 1]["strata.audit.seq"] + 1
        assert recs[i]["strata.audit.prev_sha256"] == hashlib.sha256(raw[i - 1]).hexdigest()


def test_verify_intact_and_tampered(keyed, tmp_path):
    out = verify(keyed.audit)
    assert out.returncode == 0, out.stderr
    assert "intact" in out.stdout and "starts the chain" in out.stdout
    raw = lines_of(keyed.audit)
    assert len(raw) >= 6

    def broken_at(lines, name):
        f = tmp_path / name
        write_lines(f, lines)
        r = verify(f)
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        m = re.search(re.escape(str(f)) + r":(\d+): BROKEN", r.stderr)
        assert m, r.stderr
        return int(m.group(1)), r.stderr

    # line 3 removed: the line now third does not follow line 2
    n, msg = broken_at(raw[:2] + raw[3:], "deleted.ndjson")
    assert n == 3 and "removed" in msg
    # line 3 edited (a field changed): line 4 no longer chains to it
    rec = json.loads(raw[2])
    edited = raw[2].replace(b'"client.port":%d' % rec["client.port"],
                            b'"client.port":%d' % (rec["client.port"] + 1))
    assert edited != raw[2]
    n, msg = broken_at(raw[:2] + [edited] + raw[3:], "edited.ndjson")
    assert n == 4 and "edited" in msg
    # lines 3 and 4 swapped
    n, msg = broken_at(raw[:2] + [raw[3], raw[2]] + raw[4:], "swapped.ndjson")
    assert n == 3
    # a line inserted (a copy of line 2 after it)
    n, msg = broken_at(raw[:2] + [raw[1]] + raw[2:], "inserted.ndjson")
    assert n == 3 and "inserted" in msg
    # a forged line with the right seq but a made-up prev
    forged = json.loads(raw[2])
    forged["strata.audit.prev_sha256"] = "1" * 64
    n, msg = broken_at(raw[:2] + [json.dumps(forged, separators=(",", ":")).encode()] + raw[3:],
                       "forged.ndjson")
    assert n == 3


def test_export_watermark(keyed, tmp_path):
    key_file = keyed.dir / "audit.ndjson.hmac-key"
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    key = key_file.read_bytes().rstrip(b"\n")
    r = requests.get(keyed.url + "/admin/audit?lines=5", headers=h(keyed.keys["auditor"]))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-ndjson"
    exp = r.content.split(b"\n")[:-1]
    assert len(exp) == 5
    logged = lines_of(keyed.audit)
    for line in exp:
        m = WM_SUFFIX.search(line)
        assert m, line
        reader, mac = m.group(1), m.group(2).decode()
        assert reader == b"auditor1"
        orig = line[:m.start()] + b"}"
        assert orig in logged                       # the logged bytes, untouched
        want = hmac.new(key, orig + b"\n" + reader, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(want, mac)

    f = tmp_path / "export.ndjson"
    write_lines(f, exp)
    out = verify("--hmac-key", key_file, f)
    assert out.returncode == 0, out.stderr
    assert "auditor1" in out.stdout and "HMAC good" in out.stdout
    # without the key: the chain is checked, the watermarks are not
    out = verify(f)
    assert out.returncode == 0 and "not checked" in out.stdout, out.stdout + out.stderr
    # the plain log is not an export
    out = verify("--hmac-key", key_file, keyed.audit)
    assert out.returncode == 1 and ":1: BROKEN" in out.stderr and "watermark" in out.stderr

    def must_fail(lines, name, line_no):
        g = tmp_path / name
        write_lines(g, lines)
        o = verify("--hmac-key", key_file, g)
        assert o.returncode == 1, (name, o.stdout)
        assert f"{g}:{line_no}: BROKEN" in o.stderr, o.stderr

    # another reader claimed on line 2
    must_fail(exp[:1] + [exp[1].replace(b'"auditor1"', b'"someone"')] + exp[2:], "reader.ndjson", 2)
    # a field of line 3 changed
    rec = json.loads(exp[2])
    changed = exp[2].replace(b'"event.duration":%d' % rec["event.duration"],
                             b'"event.duration":%d' % (rec["event.duration"] + 1))
    assert changed != exp[2]
    must_fail(exp[:2] + [changed] + exp[3:], "line.ndjson", 3)
    # a line dropped from the export
    must_fail(exp[:1] + exp[2:], "dropped.ndjson", 2)
    # the wrong key
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(16).hex().encode() + b"\n")
    os.chmod(other, 0o600)
    o = verify("--hmac-key", other, f)
    assert o.returncode == 1 and ":1: BROKEN" in o.stderr


def test_audit_access_by_role(keyed):
    k = keyed.keys
    assert requests.get(keyed.url + "/admin/audit", headers=h(k["auditor"])).status_code == 200
    assert requests.get(keyed.url + "/admin/audit", headers=h(k["user"])).status_code == 403
    assert requests.get(keyed.url + "/admin/audit", headers=h(k["developer"])).status_code == 403
    assert requests.get(keyed.url + "/admin/audit").status_code == 401
    r = requests.get(keyed.url + "/admin/audit?lines=0", headers=h(k["auditor"]))
    assert r.status_code == 400


def ecs_line(ts, seq, prev):
    return json.dumps({
        "@timestamp": ts, "ecs.version": "8.11.0", "event.kind": "event",
        "event.category": ["web"], "event.type": ["access"], "event.outcome": "success",
        "event.duration": 1000, "client.ip": "127.0.0.1", "client.port": 1,
        "http.request.method": "GET", "url.path": "/health",
        "http.response.status_code": 200, "http.response.body.bytes": 2,
        "strata.request.id": "x-1", "strata.audit.seq": seq,
        "strata.audit.prev_sha256": prev}, separators=(",", ":")).encode()


def test_retention_and_rotation_at_start(tmp_path):
    need_model()
    today = datetime.datetime.now(datetime.timezone.utc).date()
    day = lambda n: (today - datetime.timedelta(days=n)).isoformat()
    audit = tmp_path / "audit.ndjson"
    # 180 days kept: -200 and -182 go, -179 and -2 stay (a margin of one day
    # each side, so a start across midnight cannot flip them); look-alikes stay
    old = [tmp_path / f"audit.ndjson.{day(200)}", tmp_path / f"audit.ndjson.{day(182)}.1"]
    kept = [tmp_path / f"audit.ndjson.{day(179)}", tmp_path / f"audit.ndjson.{day(2)}",
            tmp_path / f"audit.ndjson.{day(300)}.gz", tmp_path / "audit.ndjson.old"]
    for p in old + kept:
        p.write_text("{}\n")
    # the current file still holds yesterday's line: rotated at start
    yline = ecs_line(day(1) + "T23:59:59.000Z", 1, GENESIS)
    audit.write_bytes(yline + b"\n")
    key = tmp_path / "watermark.key"
    key.write_bytes(b"k" * 32 + b"\n")
    os.chmod(key, 0o600)
    s = Server("--audit-log", str(audit), "--audit-retain-days", "180",
               "--audit-hmac-key", str(key))
    try:
        for p in old:
            assert not p.exists(), p
        for p in kept:
            assert p.exists(), p
        rotated = tmp_path / f"audit.ndjson.{day(1)}"
        assert rotated.read_bytes() == yline + b"\n"
        assert not (tmp_path / "audit.ndjson.hmac-key").exists()   # the given key is used
        assert requests.get(s.url + "/health").status_code == 200
        first = json.loads(lines_of(audit)[0])
        assert first["strata.audit.seq"] == 2
        assert first["strata.audit.prev_sha256"] == hashlib.sha256(yline).hexdigest()
        out = verify(rotated, audit)
        assert out.returncode == 0, out.stderr
        assert "2 file(s)" in out.stdout and "starts the chain" in out.stdout
        # open server: the reader is "anonymous", and the given key signs
        r = requests.get(s.url + "/admin/audit?lines=1")
        assert r.status_code == 200
        assert json.loads(r.content)["strata.export.reader_id"] == "anonymous"
        f = tmp_path / "export.ndjson"
        f.write_bytes(r.content)
        out = verify("--hmac-key", key, f)
        assert out.returncode == 0 and "'anonymous'" in out.stdout, out.stdout + out.stderr
    finally:
        rc, _, err = s.stop()
    assert rc == 0, err
    # restarted the same day: the chain goes on in the same file
    n_before = len(lines_of(audit))
    s = Server("--audit-log", str(audit), "--audit-hmac-key", str(key))
    try:
        assert requests.get(s.url + "/health").status_code == 200
    finally:
        rc, _, err = s.stop()
    assert rc == 0, err
    after = lines_of(audit)
    assert len(after) > n_before                    # start-up polls /health too
    assert json.loads(after[n_before])["strata.audit.prev_sha256"] == \
        hashlib.sha256(after[n_before - 1]).hexdigest()
    out = verify(rotated, audit)
    assert out.returncode == 0, out.stderr


def test_filebeat_config():
    """configs/filebeat/strata-audit.yml (no filebeat here: its shape, per
    the filestream docs, and that its globs take the rotated files and
    never the HMAC key)."""
    import fnmatch
    yaml = pytest.importorskip("yaml")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = yaml.safe_load(open(os.path.join(root, "configs", "filebeat", "strata-audit.yml")))
    inp = cfg["filebeat.inputs"][0]
    assert inp["type"] == "filestream" and inp["id"]
    nd = inp["parsers"][0]["ndjson"]
    assert nd["target"] == "" and nd["overwrite_keys"] and nd["expand_keys"]
    names = ["/var/log/strata/audit.ndjson", "/var/log/strata/audit.ndjson.2024-05-01",
             "/var/log/strata/audit.ndjson.2024-05-01.2"]
    excl = [re.compile(e) for e in inp["prospector.scanner.exclude_files"]]
    taken = lambda n: (any(fnmatch.fnmatchcase(n, p) for p in inp["paths"]) and
                       not any(e.search(n) for e in excl))
    assert all(taken(n) for n in names)
    assert not taken("/var/log/strata/audit.ndjson.hmac-key")
