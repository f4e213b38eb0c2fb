#!/usr/bin/env python3
# Writes an OCI image layout (gzip layers of random files) for client tests:
#   mkimage.py DIR [LAYERS] [BYTES_PER_LAYER]; prints the manifest digest.
import hashlib, json, os, sys, tarfile, io
out = sys.argv[1]; nlayers = int(sys.argv[2]) if len(sys.argv) > 2 else 2; size = int(sys.argv[3]) if len(sys.argv) > 3 else 100000
os.makedirs(out + "/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(b)
    return "sha256:" + d
layers = []
for i in range(nlayers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = os.urandom(size)
        ti = tarfile.TarInfo(f"file{i}"); ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    import gzip
    b = gzip.compress(buf.getvalue(), mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(b), "size": len(b)})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}, "config": {}}).encode()
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cfg), "size": len(cfg)}, "layers": layers}).encode()
md = put(man)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(man), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(out + "/index.json", "w"))
open(out + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(md)
