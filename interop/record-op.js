// The reference client (@atproto/api) changing one record directly in a
// PDS, as an owner would with any ATProto client. Usage:
//   node record-op.js SERVICE_URL IDENTIFIER PASSWORD delete COLLECTION RKEY
//   node record-op.js SERVICE_URL IDENTIFIER PASSWORD put COLLECTION RKEY RECORD_JSON
const { AtpAgent } = require('@atproto/api')

;(async () => {
  const [service, identifier, password, op, collection, rkey, record] = process.argv.slice(2)
  const agent = new AtpAgent({ service })
  await agent.login({ identifier, password })
  const repo = agent.session.did
  if (op === 'delete') {
    await agent.com.atproto.repo.deleteRecord({ repo, collection, rkey })
  } else if (op === 'put') {
    await agent.com.atproto.repo.putRecord({ repo, collection, rkey, record: JSON.parse(record) })
  } else {
    throw new Error('unknown operation ' + op)
  }
  console.log(JSON.stringify({ ok: true, did: repo }))
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
