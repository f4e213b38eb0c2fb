// The reference client (@atproto/api) against a PDS: logs in, creates a
// record, reads it back and lists the collection. Usage:
//   node api-client.js SERVICE_URL IDENTIFIER PASSWORD
const { AtpAgent } = require('@atproto/api')

;(async () => {
  const [service, identifier, password] = process.argv.slice(2)
  const agent = new AtpAgent({ service })
  await agent.login({ identifier, password })
  const did = agent.session.did
  const created = await agent.com.atproto.repo.createRecord({
    repo: did,
    collection: 'io.atcr.manifest',
    record: { $type: 'io.atcr.manifest', repository: 'app', digest: 'sha256:' + 'a'.repeat(64), createdAt: new Date().toISOString() },
  })
  const rkey = created.data.uri.split('/').pop()
  const got = await agent.com.atproto.repo.getRecord({ repo: did, collection: 'io.atcr.manifest', rkey })
  const listed = await agent.com.atproto.repo.listRecords({ repo: did, collection: 'io.atcr.manifest' })
  console.log(JSON.stringify({ ok: true, did, uri: created.data.uri, cid: created.data.cid, gotCid: got.data.cid, listed: listed.data.records.length }))
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
