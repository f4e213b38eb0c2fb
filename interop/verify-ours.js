// Verifies ATCR's output with the reference libraries. Reads JSON on stdin:
//   { did, didKey, proofs: [{collection, rkey, cid|null, car}], repoCar, plcOps }
// (CARs base64). Checks every getRecord proof with verifyProofs, the getRepo
// CAR with verifyRepoCar (commit signature, MST, every record), and the PLC
// operation log with validateOperationLog. Prints a JSON summary; exits 1 on
// any failure.
const { verifyProofs, verifyRepoCar } = require('@atproto/repo')
const { validateOperationLog } = require('@did-plc/lib')
// CID via @atproto/lex-data: multiformats itself is ESM-only.
const { CID } = require('@atproto/lex-data')

;(async () => {
  const input = JSON.parse(require('fs').readFileSync(0, 'utf8'))
  const b64 = (s) => new Uint8Array(Buffer.from(s, 'base64'))
  let proofsVerified = 0
  for (const p of input.proofs) {
    const claim = { collection: p.collection, rkey: p.rkey, cid: p.cid ? CID.parse(p.cid) : null }
    const res = await verifyProofs(b64(p.car), [claim], input.did, input.didKey)
    if (res.verified.length !== 1) throw new Error(`proof not verified: ${p.collection}/${p.rkey}`)
    proofsVerified++
  }
  const repo = await verifyRepoCar(b64(input.repoCar), input.did, input.didKey)
  const doc = await validateOperationLog(input.did, input.plcOps)
  console.log(JSON.stringify({ ok: true, proofsVerified, repoRecords: repo.creates.length, plcHandle: doc.alsoKnownAs }))
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
