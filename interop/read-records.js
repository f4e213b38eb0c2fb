// The reference client (@atproto/api) reads an account's records without
// logging in. Usage: node read-records.js SERVICE_URL DID COLLECTION...
// Prints {"<collection>": [records...], ...}.
const { AtpAgent } = require('@atproto/api')

;(async () => {
  const [service, repo, ...collections] = process.argv.slice(2)
  const agent = new AtpAgent({ service })
  const out = {}
  for (const collection of collections) {
    const res = await agent.com.atproto.repo.listRecords({ repo, collection, limit: 100 })
    out[collection] = res.data.records
  }
  console.log(JSON.stringify(out))
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
