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

# The registry's signature artifact of "mono": listed by the Referrers API
# (artifactType filter), its manifest and layer fetched with oras.
SIG = "application/vnd.atproto.signature.v1+json"
mono = client.get_manifest(f"{host}/{repo}:mono")
subject = "sha256:" + hashlib.sha256(
    client.do_request(f"http://{host}/v2/{repo}/manifests/mono", "GET",
                      headers={"Accept": mono["mediaType"]}).content).hexdigest()
r = client.do_request(f"http://{host}/v2/{repo}/referrers/{subject}?artifactType="
                      + SIG.replace("+", "%2B"), "GET")
assert r.status_code == 200, r.status_code
assert r.headers.get("OCI-Filters-Applied") == "artifactType", r.headers
refs = r.json()["manifests"]
assert len(refs) == 1 and refs[0]["artifactType"] == SIG, refs
sig = client.get_manifest(f"{host}/{repo}@{refs[0]['digest']}")
assert sig["subject"]["digest"] == subject, sig
layer = sig["layers"][0]
path = client.download_blob(f"{host}/{repo}", layer["digest"], os.path.join(work, "sig.json"))
import json
doc = json.load(open(path))
assert doc["$type"] == "io.atcr.atproto.signature" and doc["subject"]["digest"] == subject, doc
# `oras pull IMAGE@<artifact>` writes the titled layer as a file.
files = client.pull(target=f"{host}/{repo}@{refs[0]['digest']}", outdir=os.path.join(work, "sigpull"))
assert [os.path.basename(f) for f in files] == ["atproto-signature.json"], files
assert json.load(open(files[0])) == doc
assert client.delete_tag(f"{host}/{repo}", "mono")
tags = client.get_tags(f"{host}/{repo}")
# oras deletes by digest: the manifest and every tag on it are gone.
assert "mono" not in tags, tags
# ...and took its signature artifact with it.
r = client.do_request(f"http://{host}/v2/{repo}/manifests/{refs[0]['digest']}", "GET",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
assert r.status_code == 404, r.status_code
try:
    client.pull(target=f"{host}/{repo}:mono", outdir=os.path.join(work, "gone"))
except Exception:
    pass
else:
    raise AssertionError("pulled a deleted artifact")
print("ok")
