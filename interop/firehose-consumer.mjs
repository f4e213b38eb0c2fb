// Consumes a PDS's com.atproto.sync.subscribeRepos stream with the reference
// consumer, @atproto/sync's Firehose: every frame is validated against the
// lexicon, and every commit's signature (key from the DID document, resolved
// at the given PLC directory) and MST proofs are checked; ops that fail are
// dropped by Firehose, so the caller compares counts.
// Prints one JSON line per event ({seq, event, did, path?, cid?, active?,
// status?, rev?}) and one per error ({error}). Runs until stdin closes.
// Usage: node firehose-consumer.mjs WS_SERVICE PLC_URL [CURSOR]
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

// ESM ignores NODE_PATH: the packages are resolved from the working
// directory (the interop install) and imported by path.
const req = createRequire(process.cwd() + '/')
const load = (name) => import(pathToFileURL(req.resolve(name)).href)
const { Firehose } = await load('@atproto/sync')
const { IdResolver } = await load('@atproto/identity')

const [service, plcUrl, cursorArg] = process.argv.slice(2)
// The plain fetch: the PLC directory is on 127.0.0.1, which the default
// SSRF-protected fetch refuses (as the package documents for tests). The
// resolver asks for /DID at the root of plcUrl's origin; the embedded
// directory serves under a path (plc.prefix), so the path is put back.
const plcBase = new URL(plcUrl)
const fetchPlc = (url, init) => {
  const u = new URL(url instanceof Request ? url.url : url)
  if (u.origin === plcBase.origin && /^\/did(:|%3A)/i.test(u.pathname)) {
    u.pathname = plcBase.pathname.replace(/\/$/, '') + u.pathname
  }
  return globalThis.fetch(u, init)
}
const idResolver = new IdResolver({ plcUrl, fetch: fetchPlc })
let cursor = cursorArg === undefined ? undefined : Number(cursorArg)
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')

const firehose = new Firehose({
  service,
  idResolver,
  getCursor: () => cursor,
  subscriptionReconnectDelay: 200,
  // Handles are not DNS-resolvable here; identity events are still
  // validated and their DID documents resolved.
  unauthenticatedHandles: true,
  handleEvent: async (evt) => {
    cursor = evt.seq
    const o = { seq: evt.seq, event: evt.event, did: evt.did }
    if (evt.collection) o.path = `${evt.collection}/${evt.rkey}`
    if (evt.cid) o.cid = evt.cid.toString()
    if (evt.event === 'create' || evt.event === 'update') o.type = evt.record?.$type
    if (evt.event === 'account') Object.assign(o, { active: evt.active, status: evt.status ?? null })
    if (evt.event === 'sync') o.rev = evt.rev
    if (evt.event === 'identity') o.hasDidDocument = Boolean(evt.didDocument)
    out(o)
  },
  onError: (err) => {
    const cause = err.cause ? `: ${err.cause.message ?? err.cause}` : ''
    out({ error: `${err.name}: ${err.message}${cause}` })
  },
})

firehose.start()
out({ started: true })
process.stdin.on('end', async () => {
  await firehose.destroy().catch(() => {})
  process.exit(0)
})
process.stdin.resume()
