// One fixed sequence of XRPC calls against a PDS, printed as JSON: for
// each step its HTTP status, the XRPC error name, and the shape of the
// body (keys and value types, not values), so two PDSes can be diffed.
// Usage: node xrpc-sequence.js SERVICE_URL HANDLE PASSWORD [create]
const [service, handle, password, create] = process.argv.slice(2)

const shape = (v) => {
  if (v === null) return 'null'
  if (Array.isArray(v)) return v.length ? [shape(v[0])] : []
  if (typeof v === 'object') {
    const out = {}
    for (const k of Object.keys(v).sort()) out[k] = shape(v[k])
    return out
  }
  return typeof v
}

const steps = []
let token = null

async function call(name, method, nsid, { query, body, auth = true, raw, contentType } = {}) {
  const u = new URL(`/xrpc/${nsid}`, service)
  for (const [k, v] of Object.entries(query || {})) {
    for (const x of [].concat(v)) u.searchParams.append(k, x)
  }
  const headers = {}
  if (auth && token) headers.authorization = `Bearer ${token}`
  let payload
  if (raw !== undefined) {
    payload = raw
    headers['content-type'] = contentType
  } else if (body !== undefined) {
    payload = JSON.stringify(body)
    headers['content-type'] = 'application/json'
  }
  const r = await fetch(u, { method, headers, body: payload })
  const type = r.headers.get('content-type') || ''
  let json = null
  if (type.includes('json')) json = await r.json().catch(() => null)
  else await r.arrayBuffer()
  steps.push({
    step: name,
    status: r.status,
    error: json && r.status >= 400 ? json.error || null : null,
    shape: r.status < 400 && json ? shape(json) : null,
  })
  return json
}

;(async () => {
  if (create) {
    await call('createAccount', 'POST', 'com.atproto.server.createAccount', {
      body: { handle, password, email: `${handle}@example.com` },
      auth: false,
    })
    steps.pop()
  }
  await call('describeServer', 'GET', 'com.atproto.server.describeServer')
  await call('createSession bad password', 'POST', 'com.atproto.server.createSession', {
    body: { identifier: handle, password: 'wrong' },
  })
  await call('getSession without credentials', 'GET', 'com.atproto.server.getSession')
  const s = await call('createSession', 'POST', 'com.atproto.server.createSession', {
    body: { identifier: handle, password },
  })
  token = s.accessJwt
  const did = s.did
  await call('getSession', 'GET', 'com.atproto.server.getSession')
  const rec = { $type: 'io.atcr.tag', repository: 'app', tag: 'v1', manifestDigest: 'sha256:' + 'a'.repeat(64), manifest: `at://${did}/io.atcr.manifest/x`, createdAt: '2026-12-01T00:00:00.000Z' }
  await call('createRecord', 'POST', 'com.atproto.repo.createRecord', {
    body: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v1', record: rec },
  })
  await call('createRecord again', 'POST', 'com.atproto.repo.createRecord', {
    body: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v1', record: rec },
  })
  await call('putRecord', 'POST', 'com.atproto.repo.putRecord', {
    body: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v2', record: { ...rec, tag: 'v2' } },
  })
  await call('putRecord without credentials', 'POST', 'com.atproto.repo.putRecord', {
    body: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v3', record: rec },
    auth: false,
  })
  await call('getRecord', 'GET', 'com.atproto.repo.getRecord', {
    query: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v1' },
  })
  await call('getRecord missing', 'GET', 'com.atproto.repo.getRecord', {
    query: { repo: did, collection: 'io.atcr.tag', rkey: 'nope' },
  })
  await call('getRecord unknown repo', 'GET', 'com.atproto.repo.getRecord', {
    query: { repo: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', collection: 'io.atcr.tag', rkey: 'nope' },
  })
  await call('listRecords', 'GET', 'com.atproto.repo.listRecords', {
    query: { repo: did, collection: 'io.atcr.tag', limit: '1' },
  })
  await call('listRecords limit 0', 'GET', 'com.atproto.repo.listRecords', {
    query: { repo: did, collection: 'io.atcr.tag', limit: '0' },
  })
  await call('listRecords limit 101', 'GET', 'com.atproto.repo.listRecords', {
    query: { repo: did, collection: 'io.atcr.tag', limit: '101' },
  })
  await call('describeRepo', 'GET', 'com.atproto.repo.describeRepo', { query: { repo: did } })
  await call('describeRepo unknown', 'GET', 'com.atproto.repo.describeRepo', {
    query: { repo: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' },
  })
  await call('applyWrites', 'POST', 'com.atproto.repo.applyWrites', {
    body: {
      repo: did,
      writes: [
        { $type: 'com.atproto.repo.applyWrites#create', collection: 'io.atcr.tag', rkey: 'app:v4', value: { ...rec, tag: 'v4' } },
        { $type: 'com.atproto.repo.applyWrites#delete', collection: 'io.atcr.tag', rkey: 'app:v2' },
      ],
    },
  })
  await call('deleteRecord', 'POST', 'com.atproto.repo.deleteRecord', {
    body: { repo: did, collection: 'io.atcr.tag', rkey: 'app:v4' },
  })
  await call('uploadBlob', 'POST', 'com.atproto.repo.uploadBlob', {
    raw: 'some bytes', contentType: 'text/plain',
  })
  await call('getLatestCommit', 'GET', 'com.atproto.sync.getLatestCommit', { query: { did } })
  await call('getLatestCommit unknown', 'GET', 'com.atproto.sync.getLatestCommit', {
    query: { did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' },
  })
  await call('getRepoStatus', 'GET', 'com.atproto.sync.getRepoStatus', { query: { did } })
  await call('getRepoStatus unknown', 'GET', 'com.atproto.sync.getRepoStatus', {
    query: { did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' },
  })
  await call('getRepo unknown', 'GET', 'com.atproto.sync.getRepo', {
    query: { did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa' },
  })
  await call('listRepos', 'GET', 'com.atproto.sync.listRepos', { query: { limit: '10' } })
  await call('listBlobs', 'GET', 'com.atproto.sync.listBlobs', { query: { did } })
  await call('getBlob missing', 'GET', 'com.atproto.sync.getBlob', {
    query: { did, cid: 'bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy' },
  })
  await call('getBlocks missing', 'GET', 'com.atproto.sync.getBlocks', {
    query: { did, cids: ['bafyreibex4jbukm7ez42oov6lb4wdevy2xdqzg3mu64jn3egwr6euarmtm'] },
  })
  await call('unknown method', 'GET', 'com.atproto.nothing.here')
  await call('resolveHandle', 'GET', 'com.atproto.identity.resolveHandle', { query: { handle } })
  await call('deleteSession', 'POST', 'com.atproto.server.deleteSession', { auth: false })
  console.log(JSON.stringify(steps))
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e))
  process.exit(1)
})
