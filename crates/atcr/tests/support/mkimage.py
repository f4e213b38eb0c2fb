#!/usr/bin/env python3
# Writes an OCI image layout (gzip layers of random files) for client tests:
#   mkimage.py DIR [LAYERS] [BYTES_PER_LAYER] [--index] [--annotations=JSON];
#   prints the manifest digest, or with --index the digest of an image index
#   of two platform manifests (linux/amd64, linux/arm64), as `skopeo copy
#   --all` pushes it. --annotations go on the top manifest (or index), and as labels into
#   the image configurations.
import hashlib, json, os, sys, tarfile, io
index = "--index" in sys.argv
annotations = {}
for a in sys.argv:
    if a.startswith("--annotations="):
        annotations = json.loads(a[len("--annotations="):])
sys.argv = [a for a in sys.argv if a != "--index" and not a.startswith("--annotations=")]
out = sys.argv[1]; nlayers = int(sys.argv[2]) if len(sys.argv) > 2 else 2; size = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(b)
    return "sha256:" + d
def image(arch):
    layers, diff_ids = [], []
    for i in range(nlayers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            data = os.urandom(size)
            ti = tarfile.TarInfo(f"file{i}"); ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        import gzip
        raw = buf.getvalue()
        b = gzip.compress(raw, mtime=0)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(b), "size": len(b)})
        # The diff ID is the digest of the uncompressed layer.
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
      "config": {"Labels": annotations, "Cmd": ["/bin/app", "--serve"]} if annotations else {}}).encode()
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cfg), "size": len(cfg)}, "layers": layers}
    if annotations and not index:
        m["annotations"] = annotations
    man = json.dumps(m).encode()
    return man, put(man)
if index:
    entries = []
    for arch in ("amd64", "arm64"):
        man, d = image(arch)
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": len(man), "platform": {"architecture": arch, "os": "linux"}})
    ix = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    if annotations:
        ix["annotations"] = annotations
    top = json.dumps(ix).encode()
    mt, md = "application/vnd.oci.image.index.v1+json", put(top)
    size_top = len(top)
else:
    man, md = image("amd64")
    mt, size_top = "application/vnd.oci.image.manifest.v1+json", len(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": mt, "digest": md, "size": size_top, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(out + "/index.json", "w"))
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(md)
