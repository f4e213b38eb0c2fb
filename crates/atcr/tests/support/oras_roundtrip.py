#!/usr/bin/env python3
# ORAS (Python SDK) against the registry: push an artifact (monolithic and
# chunked), pull it back byte-identical, list tags, delete, see it gone.
#   oras_roundtrip.py HOST USER PASSWORD REPO WORKDIR
import os, sys, hashlib
import oras.client

host, user, password, repo, work = sys.argv[1:6]
os.chdir(work)
payload = os.urandom(3 * 1024 * 1024 + 123)
with open("artifact.bin", "wb") as f:
    f.write(payload)

client = oras.client.OrasClient(hostname=host, insecure=True)
client.auth.set_basic_auth(user, password)

for tag, chunked in (("mono", False), ("chunked", True)):
    r = client.push(files=["artifact.bin"], target=f"{host}/{repo}:{tag}",
                    do_chunked=chunked, chunk_size=1024 * 1024, disable_path_validation=True)
    assert r.status_code == 201, (tag, r.status_code, r.text)
    out = os.path.join(work, "out-" + tag)
    files = client.pull(target=f"{host}/{repo}:{tag}", outdir=out)
    got = open(files[0], "rb").read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(), "pulled bytes differ"

tags = client.get_tags(f"{host}/{repo}")
assert sorted(tags) == ["chunked", "mono"], tags
assert client.delete_tag(f"{host}/{repo}", "mono")
tags = client.get_tags(f"{host}/{repo}")
# oras deletes by digest: the manifest and every tag on it are gone.
assert "mono" not in tags, tags
try:
    client.pull(target=f"{host}/{repo}:mono", outdir=os.path.join(work, "gone"))
except Exception:
    pass
else:
    raise AssertionError("pulled a deleted artifact")
print("ok")
